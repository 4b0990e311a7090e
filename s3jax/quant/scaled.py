"""A latent's float scale: the `Scaled` pytree node (per layer or per output channel, fixed or learned),
and where its gradient meets the straight-through estimator (`scale_weights`)."""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

SCALES = ("none", "fixed", "learned")
SCALE_GRADIENTS = ("outside", "through")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Scaled:
  """A latent with a float per-layer or per-output-channel scale; the codes stay those of `latent`.

  learned=False ('fixed'): `scale` is a scalar constant chosen at init so that the initial weights have the
  variance of Flax's default kernel init (lecun normal, 1/fan_in). It gets no gradient, and the optimizer
  leaves it out of weight decay, so it never changes.
  learned=True: `scale` is the log of a per-output-channel scale, trained with the rest. Log space keeps
  the scale positive and makes its steps relative to its size.

  scale_gradient='outside' (default): the scale sits outside the straight-through estimator
  (`scale_weights`): the latents get the gradient of the scaled weight itself. 'through': plain autodiff,
  the latents get that gradient times the scale.
  """
  latent: Any
  scale: jax.Array
  learned: bool = dataclasses.field(metadata=dict(static=True), default=False)
  scale_gradient: str = dataclasses.field(metadata=dict(static=True), default="outside")

  def factor(self):
    return jnp.exp(self.scale) if self.learned else jax.lax.stop_gradient(self.scale)

  def weights(self, unscaled):
    """The scaled kernel of this latent's unscaled materialized weight."""
    factor = self.factor().astype(self.scale.dtype)
    return scale_weights(unscaled, factor) if self.scale_gradient == "outside" else unscaled * factor


@jax.custom_vjp
def scale_weights(weights, factor):
  """weights * factor, whose gradient reaches `weights` not multiplied by `factor`: the latents learn as
  in a layer followed by a normalisation, at a rate that does not depend on the scale. Plain autodiff
  would multiply their gradient by the scale (about 0.01 for a 3,136-input dense layer) and all but
  freeze them; benchmarks/scale_study.py measures both. `factor` gets its true gradient."""
  return weights * factor


def _scale_weights_fwd(weights, factor):
  return weights * factor, (weights, factor)


def _scale_weights_bwd(residuals, g):
  weights, factor = residuals
  leading = tuple(range(weights.ndim - factor.ndim))  # the factor broadcasts over the leading axes
  return g, jnp.sum(g * weights, axis=leading).astype(factor.dtype)


scale_weights.defvjp(_scale_weights_fwd, _scale_weights_bwd)
