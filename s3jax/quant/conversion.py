"""From a trained float model to latents of any method: each chosen kernel `W` becomes latents whose
materialized weight is `Q(W / s)`, the method's nearest level to `W / s`, with a scale `s` fitted to
minimise `||W - s * Q(W / s)||^2`.

The scale is per output channel where a BatchNorm follows the kernel: that BatchNorm absorbs it exactly
(`fold_into_batchnorm`), so the converted network has no scale parameter, as in the paper. Elsewhere it
goes into the quantizer's own scale (`Scaled`): per layer for `scale='fixed'` (the fixed scale's shape),
per output channel for `scale='learned'`.

The search (`fit_scale`): for each of `CANDIDATES` starting points `c * max|W| / max(levels)`, a few rounds
of alternating minimisation (round with `s` fixed: `q = nearest(W / s)`; then the least-squares scale
with `q` fixed: `s = <W, q> / <q, q>`); the candidate of least error wins, channel by channel. Each round
can only lower the error; the several starts avoid the poor local minima of the largest-weight start
(most weights rounded to 0 at 2 and 3 bits).

What differs by method is this feature's protocol, kept here (`functools.singledispatch` on the quantizer):
`conversion_levels(q)` (the levels a weight converts to), `converted_latent(q, ...)` (latents with a given
weight) and `conversion_magnitude(q, fans)` (their size). Pure JAX and numpy, like the rest of the
quantization core: BatchNorm statistics are plain nested dicts.
"""
import dataclasses
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from s3jax.errors import ConfigError
from s3jax.quant.deepshift import DeepShiftPSQuantizer, DeepShiftQLatent, DeepShiftQQuantizer
from s3jax.quant.interface import Quantizer
from s3jax.quant.layout import KernelFans, kernel_fans
from s3jax.quant.s3 import S3Latent, S3Quantizer, from_codes
from s3jax.quant.scaled import Scaled
from s3jax.quant.rules import Rule
from s3jax.quant.tree import latent_dtype, map_kernels, path_name

CANDIDATES = tuple(np.geomspace(0.05, 1.5, 32))  # starting scales, as fractions of max|W| / max(levels)
ROUNDS = 8                                    # alternating rounds from each start
BATCHNORM_EPSILON = 1e-5                      # torchvision's and s3jax's ResNets


@dataclasses.dataclass(frozen=True)
class Converted:
  """One kernel's conversion: its latent (no scale), the scale `s` (the shape of the reduced axes:
  per output channel, or a scalar), its codes and the relative error ||W - s Q|| / ||W||."""
  latent: object
  scale: jax.Array
  codes: jax.Array
  relative_error: float


# --- the protocol: what each method's conversion needs ------------------------------------------------
@functools.singledispatch
def conversion_levels(q: Quantizer) -> np.ndarray:
  """The levels a float weight is converted to: `q.levels()`, less any the method reaches only by accident."""
  return q.levels()


@conversion_levels.register
def _(q: DeepShiftQQuantizer):
  return q.levels()[q.levels() != 0]  # 0 only from an exactly-zero latent


@functools.singledispatch
def conversion_magnitude(q: Quantizer, fans: KernelFans) -> float:
  """`converted_latent`'s default magnitude: S3's random-init spread sqrt(2 / fan_out)."""
  del q
  return math.sqrt(2.0 / fans.fan_out)


@functools.singledispatch
def converted_latent(q: Quantizer, codes, nonzero_codes, unscaled, magnitude: float):
  """Latents (no scale) whose weight is `q.decode(codes)`, made from a float kernel divided by its scale
  (`unscaled`): `codes` are its nearest levels, `nonzero_codes` its nearest non-zero ones (for latents
  the codes leave free), `magnitude` the size of latents that act through their side of zero.
  Default: `latent_from_codes` times `magnitude`."""
  del nonzero_codes, unscaled
  return jax.tree.map(lambda x: x * jnp.asarray(magnitude, x.dtype), q.latent_from_codes(codes, jnp.float32))


@converted_latent.register
def _(q: S3Quantizer, codes, nonzero_codes, unscaled, magnitude):
  # Where the code is 0 the sign and shift latents are free: they take the float weight's sign and its
  # nearest non-zero level, so that a weight the sparse latent turns on starts there.
  del unscaled
  filled = jnp.where(codes == 0, nonzero_codes, codes)
  pattern, m = from_codes(filled, q.bits, jnp.float32), jnp.float32(magnitude)
  return S3Latent(sign=pattern.sign * m, sparse=jnp.where(codes != 0, m, -m), shift=tuple(s * m for s in pattern.shift))


@converted_latent.register
def _(q: DeepShiftQQuantizer, codes, nonzero_codes, unscaled, magnitude):
  # DeepShift-Q's latent is the float weight itself (clamped), wherever its log2 rounding already gives
  # the nearest level (it rounds in log2, between 2**k and 2**(k+1) at 1.41 * 2**k, not 1.5); the level
  # where it does not.
  del nonzero_codes, magnitude
  latent = q.project_latent(DeepShiftQLatent(jnp.asarray(unscaled, jnp.float32), q.bits))
  level = q.decode(codes)
  return DeepShiftQLatent(jnp.where(q.materialize_latent(latent) == level, latent.weight, level), q.bits)


@converted_latent.register
def _(q: DeepShiftPSQuantizer, codes, nonzero_codes, unscaled, magnitude):
  # Each latent at the centre of its rounding interval: P the level's exponent, S its sign (0 for the
  # level 0, where P holds the nearest non-zero level's exponent, for when S moves).
  del unscaled, magnitude
  filled = jnp.where(codes == 0, nonzero_codes, codes)
  return dataclasses.replace(q.latent_from_codes(filled, jnp.float32), sign=jnp.sign(codes).astype(jnp.float32))


# --- conversion, the same for every method ------------------------------------------------------------
def nearest_codes(q: Quantizer, x, levels=None) -> np.ndarray:
  """int8 codes of the level nearest to each value of `x` (the lower one on a tie), among `levels`
  (default: `conversion_levels(q)`; any sorted subset of `q.levels()`)."""
  levels = np.asarray(conversion_levels(q) if levels is None else levels, np.float64)
  mags = q.magnitudes()
  table = np.array([0 if v == 0 else np.sign(v) * (np.argmin(np.abs(mags - abs(v))) + 1) for v in levels], np.int8)
  return table[np.searchsorted((levels[:-1] + levels[1:]) / 2, np.asarray(x, np.float64), side="left")]


def fit_scale(kernel, q: Quantizer, reduce_axes: tuple[int, ...]) -> np.ndarray:
  """The scale (float32, kept dims over `reduce_axes`) of least squared error `||W - s * Q(W / s)||^2`
  that the search in this module's docstring finds. numpy on the host: a ResNet-50 takes seconds."""
  w = np.asarray(kernel, np.float64)
  levels = np.asarray(conversion_levels(q), np.float64)
  midpoints = (levels[:-1] + levels[1:]) / 2
  absmax = np.max(np.abs(w), axis=reduce_axes, keepdims=True)
  absmax = np.where(absmax > 0, absmax, 1.0)  # an all-zero channel: any scale, all weights 0
  best_s, best_err = None, None
  for c in CANDIDATES:
    s = absmax * (c / levels.max())
    for _ in range(ROUNDS):  # the least-squares scale of the current rounding
      rounded = levels[np.searchsorted(midpoints, w / s)]
      num = np.sum(w * rounded, axis=reduce_axes, keepdims=True)
      den = np.sum(rounded * rounded, axis=reduce_axes, keepdims=True)
      s = np.where((den > 0) & (num > 0), num / np.where(den > 0, den, 1.0), s)
    err = np.sum(np.square(w - s * levels[np.searchsorted(midpoints, w / s)]), axis=reduce_axes, keepdims=True)
    if best_s is None:
      best_s, best_err = s, err
    else:
      best_s, best_err = np.where(err < best_err, s, best_s), np.minimum(err, best_err)
  return best_s.astype(np.float32)


def convert_kernel(kernel, q: Quantizer, per_channel: bool = True, magnitude: float | None = None,
                   latent_scale: float = 1.0) -> Converted:
  """A float kernel's latents (no scale) under `q`, with the scale that `fit_scale` finds per output
  channel (the kernel's trailing channel axes, by `q.layout`) or per layer. `magnitude`: the size of
  the latents that act through their sign (default `latent_scale * conversion_magnitude(q, fans)`). On the
  host, not traced."""
  w = np.asarray(kernel, np.float32)
  fans = kernel_fans(w.shape, q.layout, q.dense_in_axes)
  reduce_axes = tuple(range(w.ndim - len(fans.channels))) if per_channel else tuple(range(w.ndim))
  s = fit_scale(w, q, reduce_axes)
  unscaled = w / s
  codes = nearest_codes(q, unscaled)
  levels = q.levels()
  nonzero = nearest_codes(q, unscaled, levels[levels != 0])
  magnitude = latent_scale * conversion_magnitude(q, fans) if magnitude is None else magnitude
  latent = q.project_latent(converted_latent(q, codes, nonzero, unscaled, magnitude))
  error = np.linalg.norm(w - s * np.asarray(q.decode(codes))) / max(float(np.linalg.norm(w)), 1e-30)
  return Converted(latent, jnp.asarray(np.squeeze(s, axis=reduce_axes)), jnp.asarray(codes), float(error))


def fold_into_batchnorm(stats: dict, scale, epsilon: float = BATCHNORM_EPSILON) -> dict:
  """A BatchNorm's running statistics ({'mean', 'var'}) after the conv before it is divided by `scale`
  (per channel): mean / s and (var + eps) / s^2 - eps, so that (y/s - mean') / sqrt(var' + eps) equals
  (y - mean) / sqrt(var + eps) exactly, eps included. Its affine scale and bias are unchanged."""
  s = jnp.asarray(scale, jnp.float32)
  mean, var = stats["mean"], stats["var"]
  return {**stats, "mean": (mean / s).astype(mean.dtype),
          "var": ((var + epsilon) / jnp.square(s) - epsilon).astype(var.dtype)}


def batchnorm_after(kernel_path: str) -> str:
  """The BatchNorm that follows a conv in s3jax's ResNets: '<block>/conv1/kernel' -> '<block>/bn1',
  '<block>/downsample_conv/kernel' -> '<block>/downsample_bn', 'stem_conv/kernel' -> 'stem_bn'."""
  parts = kernel_path.split("/")[:-1]
  return "/".join(parts[:-1] + [parts[-1].replace("conv", "bn")]) if parts else ""


def convert_to_latents(params, batch_stats, rules: Sequence[Rule], latent_scale: float = 1.0,
                       norm_after: Callable[[str], str] = batchnorm_after,
                       epsilon: float = BATCHNORM_EPSILON, log: Callable[[str], None] | None = None):
  """(params, batch_stats) of a trained float model with the kernels that `rules` choose converted to
  latents of their quantizer (`s3jax.quant.Rule`; FULL_PRECISION rules keep theirs as they are).

  With `scale='none'` each chosen kernel's per-channel scale is folded into the BatchNorm `norm_after`
  names in `batch_stats` (a ConfigError where there is none); with `scale='fixed'` or `'learned'` it
  becomes that `Scaled` node's initial value. `latent_scale` multiplies the size of the latents that act
  through their sign (`convert_kernel`). The trees keep the structure, shapes and dtypes a fresh
  `to_latents` gives, so a trainer's programs run on them unchanged. `log` gets one line per kernel.
  """
  stats = {path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(batch_stats or {})[0]}
  folded = {}

  def convert(name, kernel, q):
    dtype = latent_dtype(kernel.dtype, name)
    result = convert_kernel(kernel, q, per_channel=q.scale != "fixed", latent_scale=latent_scale)
    latent = jax.tree.map(lambda x: x.astype(dtype), result.latent)
    if log is not None:
      log(f"{name}: {q.describe()}, relative error {result.relative_error:.3f}")
    if q.scale == "fixed":
      return Scaled(latent, result.scale.astype(dtype), False, q.scale_gradient)
    if q.scale == "learned":
      return Scaled(latent, jnp.log(result.scale).astype(dtype), True, q.scale_gradient)
    norm = norm_after(name)
    if f"{norm}/mean" not in stats or f"{norm}/var" not in stats:
      raise ConfigError(f"{name} has no BatchNorm after it (looked for {norm!r} in the batch statistics) to "
                        "absorb its conversion scale; convert it with quant.scale=fixed or learned.")
    folded[norm] = result.scale
    return latent

  params = map_kernels(params, rules, convert)

  def fold(path, x):
    name = path_name(path)
    norm, _, key = name.rpartition("/")
    if norm not in folded:
      return x
    return fold_into_batchnorm({"mean": stats[f"{norm}/mean"], "var": stats[f"{norm}/var"]}, folded[norm],
                               epsilon)[key]

  return params, jax.tree_util.tree_map_with_path(fold, batch_stats or {})
