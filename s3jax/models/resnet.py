"""Plain Flax (linen) ResNets. They know nothing of S3: `apply` receives materialized weights.

ImageNet ResNets follow torchvision's topology and are ResNet v1.5 (the bottleneck's stride sits on the
3x3 conv), so parameter counts match torchvision. CIFAR ResNets follow He et al. 2016 (3x3 stem, three
stages of 16/32/64 channels) with 1x1 projection shortcuts.

Parameter names are a contract with `s3jax.quant.DEFAULT_RESNET_RULES`: residual blocks are
'stage<i>_block<j>' and hold convs named 'conv<k>' and 'downsample_conv'; the stem is 'stem_conv'
and the classifier 'head'.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from s3jax.errors import ConfigError

# torchvision's BatchNorm defaults: running-stat momentum 0.1 (0.9 in Flax's convention), eps 1e-5.
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


def _pad(k: int):
  return ((k // 2, k // 2),) * 2


class BasicBlock(nn.Module):
  filters: int
  strides: int = 1
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(BatchNorm, use_running_average=not train, dtype=self.dtype)
    y = conv(self.filters, (3, 3), self.strides, padding=_pad(3), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.filters, (3, 3), padding=_pad(3), name="conv2")(y)
    y = norm(name="bn2")(y)
    if x.shape[-1] != self.filters or self.strides != 1:
      x = conv(self.filters, (1, 1), self.strides, name="downsample_conv")(x)
      x = norm(name="downsample_bn")(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  filters: int
  strides: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(BatchNorm, use_running_average=not train, dtype=self.dtype)
    out = self.filters * self.expansion
    y = conv(self.filters, (1, 1), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.filters, (3, 3), self.strides, padding=_pad(3), name="conv2")(y)
    y = nn.relu(norm(name="bn2")(y))
    y = conv(out, (1, 1), name="conv3")(y)
    y = norm(name="bn3")(y)
    if x.shape[-1] != out or self.strides != 1:
      x = conv(out, (1, 1), self.strides, name="downsample_conv")(x)
      x = norm(name="downsample_bn")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A ResNet; `imagenet_stem` picks the 7x7/2 conv + max-pool stem, else a 3x3/1 conv (CIFAR)."""
  stage_sizes: Sequence[int]
  block: Any
  num_classes: int
  widths: Sequence[int] = (64, 128, 256, 512)
  imagenet_stem: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = jnp.asarray(x, self.dtype)
    if self.imagenet_stem:
      x = nn.Conv(self.widths[0], (7, 7), 2, padding=_pad(7), use_bias=False, dtype=self.dtype,
                  name="stem_conv")(x)
    else:
      x = nn.Conv(self.widths[0], (3, 3), padding=_pad(3), use_bias=False, dtype=self.dtype,
                  name="stem_conv")(x)
    x = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name="stem_bn")(x))
    if self.imagenet_stem:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))
    for i, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block(width, strides, dtype=self.dtype, name=f"stage{i + 1}_block{j}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


_IMAGENET = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
    "resnet101": ((3, 4, 23, 3), Bottleneck),
    "resnet152": ((3, 8, 36, 3), Bottleneck),
}
_CIFAR = {"resnet20": 3, "resnet32": 5, "resnet56": 9}

MODEL_NAMES = tuple(_IMAGENET) + tuple(_CIFAR)


def create_model(name: str, num_classes: int, half_precision: bool = False) -> ResNet:
  """The model registry: `config.model` names one of MODEL_NAMES.

  half_precision computes in bfloat16 while params (and S3 latents) stay float32.
  """
  dtype = jnp.bfloat16 if half_precision else jnp.float32
  if name in _IMAGENET:
    stages, block = _IMAGENET[name]
    return ResNet(stages, block, num_classes, dtype=dtype)
  if name in _CIFAR:
    return ResNet((_CIFAR[name],) * 3, BasicBlock, num_classes, widths=(16, 32, 64),
                  imagenet_stem=False, dtype=dtype)
  raise ConfigError(f"model={name!r} is unknown; use one of {MODEL_NAMES}.")
