"""DenseShift (Li et al., ICCV 2023): zero-free shift weights W = sgn(Ws) * 2**e.

The exponent is the same chain as S3's, e_1 = step(t_1), e_k = (e_{k-1} + 1) * step(t_k), over
K = 2**(bits-1) - 1 links, so bits b give the 2**b values {±1, ±2, ..., ±2**K} ({±1, ±2, ±4, ±8} at 3 bits).
The forward value is exact; the backward pass goes through the released code's surrogate
sgn(Ws) * sqrt(e + 1). The released code has only the 3-bit layer; the other widths generalise its chain
as S3 does (ours). Formulas: docs/METHODS.md.
"""
import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from s3jax.quant.binarizers import exact_exp2, plus_minus_one, straight_through, ste_sign
from s3jax.quant.interface import KernelFans, Quantizer, register_method
from s3jax.quant.s3 import chain_for_exponent, hard_step, normal_draws, shift_exponent

SUPPORTED_BITS = (2, 3, 4, 5)
INIT_STD = 1e-3  # the released "low-variance" init


def num_chain_links(bits: int) -> int:
  """K = 2**(bits-1) - 1."""
  return 2 ** (bits - 1) - 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DenseShiftLatent:
  """Sign latent Ws and the chain t_1..t_K (`shift[0]` is t_1), each of the kernel's shape."""
  sign: jax.Array
  shift: tuple[jax.Array, ...]


def materialize_denseshift(latent: DenseShiftLatent) -> jax.Array:
  s = ste_sign(latent.sign)
  e = shift_exponent(latent.shift)
  return straight_through(s * exact_exp2(e), s * jnp.sqrt(e + 1))


@register_method
@dataclasses.dataclass(frozen=True)
class DenseShiftQuantizer(Quantizer):
  """DenseShift at 2-5 bits. Every latent starts at N(0, 1e-3); there is no zero, so no dense penalty."""

  method: ClassVar[str] = "denseshift"
  latent_type: ClassVar[type] = DenseShiftLatent
  supported_bits: ClassVar[tuple[int, ...]] = SUPPORTED_BITS
  has_zero: ClassVar[bool] = False
  lowest_code: ClassVar[int] = 1  # ±1

  def init_latent(self, key, shape, dtype, fans: KernelFans):
    del fans  # the released init ignores the layer's size
    draws = normal_draws(key, 1 + num_chain_links(self.bits), shape, dtype, INIT_STD)
    return DenseShiftLatent(sign=draws[0], shift=tuple(draws[1:]))

  def materialize_latent(self, latent):
    return materialize_denseshift(latent)

  def latent_from_codes(self, codes, dtype):
    e = jnp.abs(codes).astype(jnp.int32) - 1  # |code| - 1 = e, on S3's chain
    return DenseShiftLatent(sign=plus_minus_one(codes > 0).astype(dtype),
                            shift=chain_for_exponent(e, num_chain_links(self.bits), dtype))

  def latent_codes(self, latent):
    sign = jnp.where(latent.sign >= 0, 1, -1)
    return (sign * (shift_exponent(latent.shift, hard_step) + 1)).astype(jnp.int8)

  def magnitudes(self):
    return 2.0 ** np.arange(num_chain_links(self.bits) + 1)

  def latent_roles(self, latent):
    return DenseShiftLatent(sign="sign", shift=("shift",) * len(latent.shift))

  @classmethod
  def bits_of(cls, latent):
    return int(np.log2(len(latent.shift) + 1)) + 1
