"""A multilayer perceptron: the Dense-heavy model, where at batch 1 reading the weights dominates.

Parameter names are a contract with `QUANT_PATTERNS`: hidden layers are 'dense<i>' (no bias, each followed
by BatchNorm 'bn<i>' and a ReLU); the classifier 'head' stays float, as in the ResNets.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from s3jax.models.resnet import BatchNorm

QUANT_PATTERNS = (r"dense\d+/kernel",)
# Hidden widths. mlp: 784-1024-1024-1024-10 on 28x28 digits, 2.9M quantized weights; mlp_tiny for tests.
MLPS = {"mlp": (1024, 1024, 1024), "mlp_tiny": (64, 48)}


class MLP(nn.Module):
  widths: Sequence[int]
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = jnp.asarray(x, self.dtype).reshape(x.shape[0], -1)
    for i, width in enumerate(self.widths):
      x = nn.Dense(width, use_bias=False, dtype=self.dtype, name=f"dense{i + 1}")(x)
      x = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name=f"bn{i + 1}")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def mlp(name: str, num_classes: int, dtype) -> MLP:
  return MLP(MLPS[name], num_classes, dtype=dtype)
