"""S3, the sign-sparse-shift reparameterization (Li et al., NeurIPS 2021), for one weight tensor.

W = sgn(Ws) * step(Wz) * 2**e, with the exponent chain
e_1 = step(S_1), e_k = (e_{k-1} + 1) * step(S_k), e = e_K (e = 0 when K = 0),
so n bits give K = 2**(n-1) - 2 shift latents and W in {0, ±1, ..., ±2**K}.
The released reference code has only the 3-bit layer; the 2-, 4- and 5-bit forms generalise its chain.
Gradients, inits and sources: docs/METHODS.md.
"""
import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from s3jax.errors import ConfigError
from s3jax.quant.binarizers import exact_exp2, ste_sign, ste_step
from s3jax.quant.interface import KernelFans, Quantizer, kernel_fans, register_method

SUPPORTED_BITS = (2, 3, 4, 5)
INIT_SCHEMES = ("normal", "dense")


def num_shift_latents(bits: int) -> int:
  """K = 2**(bits-1) - 2: 0 (ternary), 2, 6 or 14 shift latents."""
  if bits not in SUPPORTED_BITS:
    raise ConfigError(f"bits={bits!r} is not supported by s3; use one of {SUPPORTED_BITS}.")
  return 2 ** (bits - 1) - 2


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class S3Latent:
  """Latents of one quantized tensor: sign Ws, sparse Wz and shift S_1..S_K (chain order).

  Every field has the shape of the kernel it replaces. The bit width follows from K = len(shift).
  """
  sign: jax.Array
  sparse: jax.Array
  shift: tuple[jax.Array, ...]

  @property
  def bits(self) -> int:
    return int(math.log2(len(self.shift) + 2)) + 1

  @property
  def shape(self):
    return self.sign.shape

  @property
  def dtype(self):
    return self.sign.dtype


def he_fan_out_std(shape) -> float:
  """sqrt(2 / fan_out), fan_out = kh*kw*C_out for an HWIO conv kernel and `out` for an (in, out) kernel."""
  return math.sqrt(2.0 / kernel_fans(shape, "dense" if len(shape) == 2 else "conv").fan_out)


def init_latent(key, shape, bits: int = 3, scheme: str = "normal", dtype=jnp.float32) -> S3Latent:
  """Random S3 latents for a kernel of `shape`.

  scheme="normal" (the released code): every latent ~ N(0, he_fan_out_std); about half the weights start at 0.
  scheme="dense" (the first public commit): Ws ~ N, Wz = |N|, S_k = -|N|; every weight starts at ±1.
  """
  k = num_shift_latents(bits)
  if scheme not in INIT_SCHEMES:
    raise ConfigError(f"s3 init scheme {scheme!r} is unknown; use one of {INIT_SCHEMES}.")
  return _draw_latent(key, shape, k, scheme, he_fan_out_std(shape), dtype)


def normal_draws(key, count: int, shape, dtype, std: float) -> list[jax.Array]:
  """The draws `[std * jax.random.normal(k, shape, dtype) for k in jax.random.split(key, count)]`, in one
  vmapped PRNG program: XLA:CPU compiles each PRNG call as its own loop, most of an init's compile. The
  scaling comes before the unstacking, as in the loop, where XLA folds `std` into the normal's own factor."""
  return list(std * jax.vmap(lambda sub: jax.random.normal(sub, shape, dtype))(jax.random.split(key, count)))


def _draw_latent(key, shape, k: int, scheme: str, std: float, dtype) -> S3Latent:
  draws = normal_draws(key, 2 + k, shape, dtype, std)
  sign, sparse, shift = draws[0], draws[1], draws[2:]
  if scheme == "dense":
    sparse = jnp.abs(sparse)
    shift = [-jnp.abs(s) for s in shift]
  return S3Latent(sign=sign, sparse=sparse, shift=tuple(shift))


def shift_exponent(shift, step=ste_step) -> jax.Array | float:
  """The chain e_k = (e_{k-1} + 1) * step(S_k), e_0 = 0: e_K (0 when there are no shift latents). `step`:
  straight-through (for the weights and their gradients) or `hard_step` (integer, for the codes)."""
  e = 0
  for s in shift:
    e = (e + 1) * step(s)
  return e


def hard_step(s) -> jax.Array:
  """step(s) as int32, no gradient: the chain's exponent as an integer."""
  return (s > 0).astype(jnp.int32)


def chain_for_exponent(exponent, k: int, dtype) -> tuple[jax.Array, ...]:
  """Latents S_1..S_k (+-1) whose chain gives `exponent` (0..k) exactly: e = j needs S_i > 0 exactly for
  the last j links (i > k - j), and S_{k-j} <= 0."""
  return tuple(jnp.where(i > k - exponent, 1, -1).astype(dtype) for i in range(1, k + 1))


def materialize_s3(latent: S3Latent) -> jax.Array:
  """The discrete weight sgn(Ws) * step(Wz) * 2**e in the latent's dtype, with the gradients of docs/METHODS.md."""
  magnitude = ste_step(latent.sparse)
  if latent.shift:
    magnitude = magnitude * exact_exp2(shift_exponent(latent.shift))
  return ste_sign(latent.sign) * magnitude


def s3_codes(latent: S3Latent) -> jax.Array:
  """int8 level codes: 0 for 0, ±(k+1) for ±2**k."""
  sign = jnp.where(latent.sign >= 0, 1, -1)
  nonzero = latent.sparse > 0
  return (sign * nonzero * (shift_exponent(latent.shift, hard_step) + 1)).astype(jnp.int8)


def from_codes(codes, bits: int, dtype=jnp.float32) -> S3Latent:
  """S3 latents (±1 valued) whose materialized weight has the given level codes; inverse of `to_codes`."""
  k = num_shift_latents(bits)
  codes = jnp.asarray(codes)
  if not isinstance(codes, jax.core.Tracer) and codes.size and int(jnp.max(jnp.abs(codes))) > k + 1:
    raise ConfigError(f"Level codes for {bits} bits must lie in [-{k + 1}, {k + 1}].")
  level = jnp.abs(codes).astype(jnp.int32)
  exponent = jnp.maximum(level - 1, 0)

  def pm1(cond):
    return jnp.where(cond, 1, -1).astype(dtype)

  shift = chain_for_exponent(exponent, k, dtype)  # first: the traced program keeps its order of operations
  return S3Latent(sign=pm1(codes >= 0), sparse=pm1(level > 0), shift=shift)


def level_values(bits: int) -> np.ndarray:
  """All 2**bits - 1 weight values a layer of `bits` can take, ascending."""
  k = num_shift_latents(bits)
  powers = 2.0 ** np.arange(k + 1)
  return np.concatenate([-powers[::-1], [0.0], powers])


@register_method
@dataclasses.dataclass(frozen=True)
class S3Quantizer(Quantizer):
  """S3 at 2-5 bits: W = sgn(Ws) * step(Wz) * 2**e in {0, ±1, ..., ±2**K}, K = 2**(bits-1) - 2.

  init_scheme: 'normal' (released code: every latent ~ N(0, He fan-out std), about half the weights 0)
  or 'dense' (first public commit: every weight starts at ±1). The dense-weight penalty acts on Wz.
  """
  init_scheme: str = "normal"

  method: ClassVar[str] = "s3"
  latent_type: ClassVar[type] = S3Latent
  supported_bits: ClassVar[tuple[int, ...]] = SUPPORTED_BITS
  exact_pullback: ClassVar[bool] = True  # g * ±1 * 2**e (and * ln 2 on the shifts)
  config_options: ClassVar[dict[str, str]] = {"init": "init_scheme"}

  def __post_init__(self):
    super().__post_init__()
    if self.init_scheme not in INIT_SCHEMES:
      raise ConfigError(f"s3 init={self.init_scheme!r} is unknown; use one of {INIT_SCHEMES}.")

  def init_latent(self, key, shape, dtype, fans: KernelFans):
    std = math.sqrt(2.0 / fans.fan_out)
    return _draw_latent(key, shape, num_shift_latents(self.bits), self.init_scheme, std, dtype)

  def materialize_latent(self, latent):
    return materialize_s3(latent)

  def latent_from_codes(self, codes, dtype):
    return from_codes(codes, self.bits, dtype)

  def latent_codes(self, latent):
    return s3_codes(latent)

  def magnitudes(self):
    return 2.0 ** np.arange(num_shift_latents(self.bits) + 1)

  def latent_roles(self, latent):
    return S3Latent(sign="sign", sparse="sparse", shift=("shift",) * len(latent.shift))

  @classmethod
  def bits_of(cls, latent):
    return latent.bits
