"""Statistics of the discrete weights of a params tree, for logging: pure, jittable functions."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from s3jax.quant.interface import is_latent, quantizer_of
from s3jax.quant.scaled import Scaled
from s3jax.quant.penalty import dense_penalty
from s3jax.quant.tree import latents_with_paths, sparse_mask


def value_name(value: float) -> str:
  """'0', '0.25', '1', '8', ... and '2^-9' for powers too small to print short."""
  if value == 0:
    return "0"
  exponent = math.log2(value)
  if exponent == int(exponent) and exponent < -6:
    return f"2^{int(exponent)}"
  return f"{value:g}"


def magnitude_levels(tree) -> np.ndarray:
  """The ascending union of the weight magnitudes every latent in `tree` can take (0 where it can)."""
  values = set()
  for _, x in latents_with_paths(tree):
    q = quantizer_of(x)
    values.update(q.magnitudes().tolist())
    if q.has_zero:
      values.add(0.0)
  return np.array(sorted(values))


def level_counts(tree) -> jax.Array:
  """How many quantized weights sit at each of `magnitude_levels(tree)` (scales not included)."""
  levels = magnitude_levels(tree)
  counts = jnp.zeros((len(levels),), jnp.int32)
  for _, x in latents_with_paths(tree):
    q = quantizer_of(x)
    table = np.concatenate([[0.0], q.magnitudes()])
    position = jnp.asarray(np.searchsorted(levels, table))  # |code| -> index in `levels`
    own = jnp.bincount(jnp.abs(q.codes(x).astype(jnp.int32)).ravel(), length=len(table))
    counts = counts.at[position].add(own)
  return counts


def weight_statistics(tree) -> dict:
  """'quant/share_<value>' for each magnitude level, and 'quant/dense_penalty' where S3 latents exist.

  Empty for a tree without latents. Jittable; values are arrays.
  """
  levels = magnitude_levels(tree)
  if not len(levels):
    return {}
  counts = level_counts(tree)
  shares = counts / jnp.sum(counts)
  stats = {f"quant/share_{value_name(v)}": shares[i] for i, v in enumerate(levels)}
  if any(jax.tree.leaves(sparse_mask(tree))):
    stats["quant/dense_penalty"] = dense_penalty(tree)
  return stats


def storage_bits(tree) -> dict:
  """Bits to store `tree` for inference: each quantized weight at its method's bit width (plus its float32
  scales), every other leaf at its dtype. Works on arrays or ShapeDtypeStructs.

  Returns {'quantized_weights', 'quantized_bits', 'float_params', 'float_bits'}.
  """
  counts = {"quantized_weights": 0, "quantized_bits": 0, "float_params": 0, "float_bits": 0}
  for x in jax.tree.leaves(tree, is_leaf=is_latent):
    if is_latent(x):
      weights = int(np.prod(jax.tree.leaves(x)[0].shape))
      scales = int(np.prod(x.scale.shape)) if isinstance(x, Scaled) else 0
      counts["quantized_weights"] += weights
      counts["quantized_bits"] += weights * quantizer_of(x).bits + 32 * scales
    else:
      size = int(np.prod(x.shape))
      counts["float_params"] += size
      counts["float_bits"] += size * jnp.dtype(x.dtype).itemsize * 8
  return counts
