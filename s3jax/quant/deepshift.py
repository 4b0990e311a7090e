"""DeepShift-Q and DeepShift-PS (Elhoushi et al., 2021), as in the released code (docs/METHODS.md).

Both keep their latents inside a range. The released code clamps the latent tensors in place before each
forward; here `project` does the same to the latents after each update (and at init), and the trainer
applies it after every optimizer step.
"""
import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from s3jax.quant.binarizers import exact_exp2, straight_through
from s3jax.quant.interface import KernelFans, Quantizer, register_method

SUPPORTED_BITS = (2, 3, 4, 5, 6)


def _static_bits():
  return dataclasses.field(metadata=dict(static=True), default=3)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DeepShiftQLatent:
  """One float latent per weight, as in an ordinary layer; `bits` is static (part of the tree's structure)."""
  weight: jax.Array
  bits: int = _static_bits()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DeepShiftPSLatent:
  """Shift latent P and sign latent S, each of the kernel's shape; `bits` is static."""
  shift: jax.Array
  sign: jax.Array
  bits: int = _static_bits()


def _ps_weight_fwd(p, s):
  w = _ps_weight(p, s)
  return w, w


def _ps_weight_bwd(w, g):
  return g * w * jnp.log(jnp.asarray(2.0, w.dtype)), g


@jax.custom_vjp
def _ps_weight(p, s):
  """2**round(P) * sign(round(S)); dL/dP = g * W * ln2 and dL/dS = g, as the released code."""
  return exact_exp2(jnp.round(p)) * jnp.sign(jnp.round(s))


_ps_weight.defvjp(_ps_weight_fwd, _ps_weight_bwd)


@register_method
@dataclasses.dataclass(frozen=True)
class DeepShiftQQuantizer(Quantizer):
  """DeepShift-Q: W_q = sign(W) * 2**round(log2|W|), identity straight-through gradient.

  The latent is kept in |W| in [2**smin, 1] (exact zeros stay 0), smin = -(2**(bits-1) - 1), so bits b give
  {±2**smin, ..., ±1}, and 0 only where the latent is exactly 0. Init: the layer's ordinary PyTorch init,
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)), then clamped.
  """

  method: ClassVar[str] = "deepshift_q"
  latent_type: ClassVar[type] = DeepShiftQLatent
  supported_bits: ClassVar[tuple[int, ...]] = SUPPORTED_BITS
  exact_pullback: ClassVar[bool] = True  # identity
  lowest_code: ClassVar[int] = 1  # ±2**smin, and the rare exact zeros

  @property
  def smin(self) -> int:
    return -(2 ** (self.bits - 1) - 1)

  def init_latent(self, key, shape, dtype, fans: KernelFans):
    bound = 1.0 / np.sqrt(fans.fan_in)
    return DeepShiftQLatent(jax.random.uniform(key, shape, dtype, -bound, bound), self.bits)

  def _exponent(self, w):
    # log2(0) = -inf is clipped too; those weights have sign 0.
    return jnp.clip(jnp.round(jnp.log2(jnp.abs(w))), self.smin, 0)

  def materialize_latent(self, latent):
    w = latent.weight
    return straight_through(jnp.sign(w) * exact_exp2(self._exponent(w)), w)

  def latent_from_codes(self, codes, dtype):
    return DeepShiftQLatent(self.decode(codes, dtype), self.bits)  # the weight itself, a power of two or 0

  def latent_codes(self, latent):
    w = latent.weight
    return (jnp.sign(w) * (self._exponent(w) - self.smin + 1)).astype(jnp.int8)

  def magnitudes(self):
    return 2.0 ** np.arange(self.smin, 1)

  def project_latent(self, latent):
    w = latent.weight
    low = jnp.asarray(2.0 ** self.smin, w.dtype)
    return dataclasses.replace(latent, weight=jnp.sign(w) * jnp.clip(jnp.abs(w), low, 1))

  def latent_roles(self, latent):
    return DeepShiftQLatent(weight="weight", bits=latent.bits)

  @classmethod
  def bits_of(cls, latent):
    return latent.bits


@register_method
@dataclasses.dataclass(frozen=True)
class DeepShiftPSQuantizer(Quantizer):
  """DeepShift-PS: W = 2**round(P) * sign(round(S)), a ternary sign, P kept in [smin, 0].

  smin = -(2**(bits-1) - 2): bits b give {0, ±2**smin, ..., ±1} ({0, ±1/4, ±1/2, ±1} at 3 bits).
  Init (released): conv kernels P ~ U(-10, -1) then clamped, dense kernels P ~ U(smin, 0); S ~ U(-1, 1).
  """

  method: ClassVar[str] = "deepshift_ps"
  latent_type: ClassVar[type] = DeepShiftPSLatent
  supported_bits: ClassVar[tuple[int, ...]] = SUPPORTED_BITS
  exact_pullback: ClassVar[bool] = True  # g * W * ln 2 (W = 0 or ±2**k) and g

  @property
  def smin(self) -> int:
    return -(2 ** (self.bits - 1) - 2)

  def _is_conv(self, shape) -> bool:
    return self.layout == "conv" or (self.layout == "auto" and len(shape) > 2)

  def init_latent(self, key, shape, dtype, fans: KernelFans):
    del fans
    low, high = (-10.0, -1.0) if self._is_conv(shape) else (float(self.smin), 0.0)
    # Both draws in one vmapped PRNG program (as s3.normal_draws): the same values as two calls.
    bounds = jnp.array([[low, high], [-1.0, 1.0]], dtype)
    shift, sign = jax.vmap(lambda k, b: jax.random.uniform(k, shape, dtype, b[0], b[1]))(
        jax.random.split(key), bounds)
    return DeepShiftPSLatent(shift=shift, sign=sign, bits=self.bits)

  def materialize_latent(self, latent):
    # Clipping P keeps un-projected latents in the value set; its gradient passes straight through, since
    # jnp.clip's would halve it at the bounds, where projected latents often sit.
    p = straight_through(jnp.clip(latent.shift, self.smin, 0), latent.shift)
    return _ps_weight(p, latent.sign)

  def latent_from_codes(self, codes, dtype):
    shift = jnp.where(codes == 0, 0, self.smin + jnp.abs(codes).astype(jnp.int32) - 1).astype(dtype)
    return DeepShiftPSLatent(shift=shift, sign=jnp.sign(codes).astype(dtype), bits=self.bits)

  def latent_codes(self, latent):
    exponent = jnp.round(jnp.clip(latent.shift, self.smin, 0))
    return (jnp.sign(jnp.round(latent.sign)) * (exponent - self.smin + 1)).astype(jnp.int8)

  def magnitudes(self):
    return 2.0 ** np.arange(self.smin, 1)

  def project_latent(self, latent):
    return dataclasses.replace(latent, shift=jnp.clip(latent.shift, self.smin, 0))

  def latent_roles(self, latent):
    return DeepShiftPSLatent(shift="shift", sign="sign", bits=latent.bits)

  @classmethod
  def bits_of(cls, latent):
    return latent.bits
