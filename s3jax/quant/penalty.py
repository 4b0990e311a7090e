"""S3's dense-weight regulariser R = alpha * sum(max(-Wz, 0)), as a loss term and as an optax transform."""
import jax
import jax.numpy as jnp
import optax

from s3jax.quant.tree import role_tree, sparse_mask


def dense_penalty(tree) -> jax.Array:
  """sum(max(-Wz, 0)) over every element of every S3 sparse latent in `tree` (a sum, not a mean)."""
  # relu has derivative 0 at 0, so this matches `dense_weight_penalty` exactly, ties included.
  pairs = zip(jax.tree.leaves(role_tree(tree)), jax.tree.leaves(tree))
  terms = [jnp.sum(jax.nn.relu(-x)) for role, x in pairs if role == "sparse"]
  return sum(terms, jnp.zeros((), jnp.float32))


def _add_penalty_gradient(alpha: float) -> optax.GradientTransformation:
  def update_fn(updates, state, params):
    if params is None:
      raise ValueError("dense_weight_penalty needs `params` in update().")
    add = lambda u, p: u - alpha * (p < 0).astype(u.dtype)
    return jax.tree.map(add, updates, params), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def dense_weight_penalty(alpha: float = 1e-5) -> optax.GradientTransformation:
  """Adds d/dWz of alpha * dense_penalty (that is, -alpha where Wz < 0) to S3's `sparse` leaves only.

  Put it first in the chain, before weight decay and momentum: the result is then the same update as
  adding `alpha * dense_penalty(params)` to the loss.
  """
  return optax.masked(_add_penalty_gradient(alpha), sparse_mask)
