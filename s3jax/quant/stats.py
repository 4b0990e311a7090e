"""Statistics of the discrete weights of a latent tree, for logging."""
import jax.numpy as jnp

from s3jax.quant.latent import to_codes
from s3jax.quant.tree import latents_with_paths


def level_counts(tree) -> jnp.ndarray:
  """Counts of |code| = 0, 1, ..., K+1 (weights 0, ±1, ..., ±2**K) over all latents in `tree`."""
  latents = [x for _, x in latents_with_paths(tree)]
  if not latents:
    return jnp.zeros((0,), jnp.int32)
  k_max = max(len(x.shift) for x in latents)
  counts = jnp.zeros((k_max + 2,), jnp.int32)
  for x in latents:
    codes = jnp.abs(to_codes(x).astype(jnp.int32)).ravel()
    counts = counts + jnp.bincount(codes, length=k_max + 2)
  return counts


def level_names(num_levels: int) -> list[str]:
  """'0', '1', '2', '4', ... for the magnitude levels counted by `level_counts`."""
  return ["0"] + [str(2 ** k) for k in range(num_levels - 1)]
