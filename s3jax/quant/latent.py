"""The S3 reparameterization of one weight tensor (DESIGN §2).

W = sgn(Ws) * step(Wz) * 2**e, with the exponent chain
e_1 = step(S_1), e_k = (e_{k-1} + 1) * step(S_k), e = e_K (e = 0 when K = 0),
so n bits give K = 2**(n-1) - 2 shift latents and W in {0, ±1, ..., ±2**K}.
The released reference code has only the 3-bit layer; the 2-, 4- and 5-bit forms generalise its chain.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from s3jax.quant.binarizers import exact_exp2, ste_sign, ste_step

SUPPORTED_BITS = (2, 3, 4, 5)
INIT_SCHEMES = ("normal", "dense")


def num_shift_latents(bits: int) -> int:
  """K = 2**(bits-1) - 2: 0 (ternary), 2, 6 or 14 shift latents."""
  if bits not in SUPPORTED_BITS:
    raise ValueError(f"S3 supports bits in {SUPPORTED_BITS}, got {bits!r}.")
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
  if len(shape) < 2:
    raise ValueError(f"Expected a kernel of rank >= 2 (HWIO conv or (in, out) dense), got shape {shape}.")
  fan_out = int(np.prod(shape[:-2], dtype=np.int64)) * shape[-1]
  return math.sqrt(2.0 / fan_out)


def init_latent(key, shape, bits: int = 3, scheme: str = "normal", dtype=jnp.float32) -> S3Latent:
  """Random S3 latents for a kernel of `shape`.

  scheme="normal" (the released code): every latent ~ N(0, he_fan_out_std); about half the weights start at 0.
  scheme="dense" (the first public commit): Ws ~ N, Wz = |N|, S_k = -|N|; every weight starts at ±1.
  """
  k = num_shift_latents(bits)
  if scheme not in INIT_SCHEMES:
    raise ValueError(f"Unknown S3 init scheme {scheme!r}; use one of {INIT_SCHEMES}.")
  std = he_fan_out_std(shape)
  draws = [std * jax.random.normal(sub, shape, dtype) for sub in jax.random.split(key, 2 + k)]
  sign, sparse, shift = draws[0], draws[1], draws[2:]
  if scheme == "dense":
    sparse = jnp.abs(sparse)
    shift = [-jnp.abs(s) for s in shift]
  return S3Latent(sign=sign, sparse=sparse, shift=tuple(shift))


def shift_exponent(shift) -> jax.Array | float:
  """The chain e_K (0 when there are no shift latents), with straight-through steps."""
  e = 0.0
  for s in shift:
    e = (e + 1) * ste_step(s)
  return e


def materialize(latent: S3Latent) -> jax.Array:
  """The discrete weight sgn(Ws) * step(Wz) * 2**e in the latent's dtype, with DESIGN §2's gradients."""
  magnitude = ste_step(latent.sparse)
  if latent.shift:
    magnitude = magnitude * exact_exp2(shift_exponent(latent.shift))
  return ste_sign(latent.sign) * magnitude


def to_codes(latent: S3Latent) -> jax.Array:
  """int8 level codes: 0 for 0, ±(k+1) for ±2**k."""
  sign = jnp.where(latent.sign >= 0, 1, -1)
  nonzero = latent.sparse > 0
  e = jnp.zeros(latent.shape, jnp.int32)
  for s in latent.shift:
    e = (e + 1) * (s > 0)
  return (sign * nonzero * (e + 1)).astype(jnp.int8)


def from_codes(codes, bits: int, dtype=jnp.float32) -> S3Latent:
  """Latents (±1 valued) whose materialized weight has the given level codes; inverse of `to_codes`."""
  k = num_shift_latents(bits)
  codes = jnp.asarray(codes)
  if not isinstance(codes, jax.core.Tracer) and codes.size and int(jnp.max(jnp.abs(codes))) > k + 1:
    raise ValueError(f"Level codes for {bits} bits must lie in [-{k + 1}, {k + 1}].")
  level = jnp.abs(codes).astype(jnp.int32)
  exponent = jnp.maximum(level - 1, 0)

  def pm1(cond):
    return jnp.where(cond, 1, -1).astype(dtype)

  # e = j needs S_k > 0 exactly for the last j links of the chain (k > K - j) and S_{K-j} <= 0.
  shift = tuple(pm1(idx > k - exponent) for idx in range(1, k + 1))
  return S3Latent(sign=pm1(codes >= 0), sparse=pm1(level > 0), shift=shift)


def level_values(bits: int) -> np.ndarray:
  """All 2**bits - 1 weight values a layer of `bits` can take, ascending."""
  k = num_shift_latents(bits)
  powers = 2.0 ** np.arange(k + 1)
  return np.concatenate([-powers[::-1], [0.0], powers])
