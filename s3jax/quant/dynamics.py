"""Weight dynamics: how often weights change sign, and how many sit at the lowest level (docs/METHODS.md).

The S3 paper's claim is that under S3 the discrete weights keep changing sign the way full-precision weights
do, while earlier shift networks freeze their signs and collapse to their lowest level. Two indices:

- sign-flip rate (WSVR): the share of tracked weights whose sign, strictly positive versus strictly
  negative, differs from the previous measurement (a move to or from 0 is not a flip);
- low-value rate (WLVR): the share of tracked weights at the lowest magnitude level: 0 for S3 and
  DeepShift-PS, the smallest power of two for DenseShift, and 0 or the smallest power for DeepShift-Q (its
  0 is only an exactly-zero latent). For full-precision weights, `|w| < 0.7 * mean|w|` per layer (the
  ternary-weight-network threshold).

Tracked weights are every latent of a params tree, or, for a full-precision tree, the kernels the
quantization rules would choose. Signs are kept as int8, one per tracked weight. Pure and jittable.
"""
import jax
import jax.numpy as jnp

from s3jax.quant.interface import is_latent, quantizer_of
from s3jax.quant.rules import checked_rules, first_match
from s3jax.quant.tree import latents_with_paths, path_name

FLOAT_LOW_VALUE_THRESHOLD = 0.7  # times mean |w|, per layer


def tracked_weights(params, rules=None) -> list[tuple[str, object]]:
  """(path, latent or float kernel) for every weight the dynamics follow, in tree order.

  A tree with latents tracks its latents. A full-precision tree tracks the kernels that `rules` (`Rule`s)
  choose, whatever their quantizer: a float run's rules name the kernels its quantized runs quantize.
  """
  latents = latents_with_paths(params)
  if latents or rules is None:
    return latents
  rules = checked_rules(rules)
  chosen = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_name(path)
    if first_match(rules, name) is not None and getattr(leaf, "ndim", 0) >= 2:
      chosen.append((name, leaf))
  return chosen


def signs(x) -> jax.Array:
  """int8 sign (-1, 0, +1) of each weight of a latent (from its codes) or a float kernel."""
  if is_latent(x):
    return jnp.sign(quantizer_of(x).codes(x)).astype(jnp.int8)
  return jnp.sign(x).astype(jnp.int8)


def low_value(x) -> jax.Array:
  """bool: the weight sits at its layer's lowest magnitude level."""
  if is_latent(x):
    q = quantizer_of(x)
    return jnp.abs(q.codes(x).astype(jnp.int32)) <= q.lowest_code
  magnitude = jnp.abs(x)
  return magnitude < FLOAT_LOW_VALUE_THRESHOLD * jnp.mean(magnitude)


def tracked_signs(tracked) -> tuple[jax.Array, ...]:
  return tuple(signs(x) for _, x in tracked)


def weight_dynamics(tracked, previous_signs) -> tuple[dict, dict, tuple]:
  """(totals, per_layer, new_signs) for the tracked weights against `previous_signs`.

  totals: 'dynamics/sign_flip_rate' and 'dynamics/low_value_rate' over all tracked weights; per_layer:
  the same two per path ('dynamics_layers/<path>/...'); new_signs: to pass as `previous_signs` next time.
  """
  new = tracked_signs(tracked)
  if not new:
    return {}, {}, new
  per_layer, flips, lows, total = {}, 0, 0, 0
  for (path, x), now, before in zip(tracked, new, previous_signs):
    layer_flips = jnp.sum((now.astype(jnp.int32) * before.astype(jnp.int32)) < 0)
    layer_lows = jnp.sum(low_value(x))
    per_layer[f"dynamics_layers/{path}/sign_flip_rate"] = layer_flips / now.size
    per_layer[f"dynamics_layers/{path}/low_value_rate"] = layer_lows / now.size
    flips, lows, total = flips + layer_flips, lows + layer_lows, total + now.size
  totals = {"dynamics/sign_flip_rate": flips / total, "dynamics/low_value_rate": lows / total}
  return totals, per_layer, new
