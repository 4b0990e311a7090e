"""`ActivationPoint`: a named place in a model where an integer deployment puts a tensor on a grid.

It computes nothing and holds no variables. It names a tensor that no kernel layer takes as its input, so
that activation rules can choose it by its path, as they choose a layer by its kernel's
(`s3jax.models.quantized_inputs`): in a ResNet, the block input that its first conv and its shortcut share,
and both summands of its residual sum. Where they are quantized, the sum of two int8 tensors is an int8 add
and every tensor between quantized layers can be int8 (`--litert=full_int8`).
"""
import flax.linen as nn


class ActivationPoint(nn.Module):
  """The identity, at a path activation rules can choose ('stage1_block0/branch')."""

  @nn.compact
  def __call__(self, x):
    return x
