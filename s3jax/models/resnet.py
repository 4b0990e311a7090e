"""Plain Flax (linen) ResNets. They know nothing of S3: `apply` receives materialized weights.

ImageNet ResNets follow torchvision's topology and are ResNet v1.5 (the bottleneck's stride sits on the
3x3 conv), so parameter counts match torchvision. CIFAR ResNets follow He et al. 2016 (3x3 stem, three
stages of 16/32/64 channels) with 1x1 projection shortcuts. The same code with `spatial_dims=1` is a 1-D
ResNet over time (speech: MFCC coefficients as channels), the kind of network of the S3 authors'
spoken-language shift network (Avila et al., Interspeech 2022).

Parameter names are a contract with `QUANT_PATTERNS`, the kernels a run quantizes by default: residual
blocks are 'stage<i>_block<j>' and hold convs named 'conv<k>' and 'downsample_conv'; the stem is
'stem_conv' and the classifier 'head'. Each block also names, as `ActivationPoint`s, its input ('input',
shared by its first conv and its shortcut) and the summands of its residual sum ('branch', 'shortcut'):
where `INTEGER_ACTIVATION_PATTERNS` quantize them, the sum is integer.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from s3jax.models.activation_point import ActivationPoint


# torchvision's BatchNorm defaults: running-stat momentum 0.1 (0.9 in Flax's convention), eps 1e-5.
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


def _pad(k: int, dims: int = 2):
  return ((k // 2, k // 2),) * dims


ModuleDef = Any

# Every conv kernel in the stages (downsample 1x1 convs included); stem, BatchNorms and head stay float.
QUANT_PATTERNS = (r"stage\d+_block\d+/.*conv.*/kernel",)
# quant.activation_points=integer: every tensor between quantized convs on a grid. Each block's input, once
# for its first conv, its downsample conv and an identity shortcut; its inner convs' inputs; both summands.
INTEGER_ACTIVATION_PATTERNS = (r"stage\d+_block\d+/(input|branch|shortcut)", r"stage\d+_block\d+/conv[23]/kernel")


class BasicBlock(nn.Module):
  """Two 3x3 convs. `conv` and `norm` come from the ResNet, which sets their dtype and BatchNorm's mode."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  spatial_dims: int = 2
  expansion = 1

  @nn.compact
  def __call__(self, x):
    d, conv, norm = self.spatial_dims, self.conv, self.norm
    x = ActivationPoint(name="input")(x)
    y = conv(self.filters, (3,) * d, (self.strides,) * d, padding=_pad(3, d), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.filters, (3,) * d, padding=_pad(3, d), name="conv2")(y)
    y = ActivationPoint(name="branch")(norm(name="bn2")(y))
    return nn.relu(_shortcut(self, x, self.filters) + y)


class Bottleneck(nn.Module):
  """1x1, 3x3 (strided: ResNet v1.5), 1x1 convs, `expansion` times wider out."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  spatial_dims: int = 2
  expansion = 4

  @nn.compact
  def __call__(self, x):
    d, conv, norm = self.spatial_dims, self.conv, self.norm
    x = ActivationPoint(name="input")(x)
    y = conv(self.filters, (1,) * d, name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.filters, (3,) * d, (self.strides,) * d, padding=_pad(3, d), name="conv2")(y)
    y = nn.relu(norm(name="bn2")(y))
    y = conv(self.filters * self.expansion, (1,) * d, name="conv3")(y)
    y = ActivationPoint(name="branch")(norm(name="bn3")(y))
    return nn.relu(_shortcut(self, x, self.filters * self.expansion) + y)


def _shortcut(block, x, out: int):
  """The identity, or a strided 1x1 projection where the shape changes (inside `block`'s compact call)."""
  if x.shape[-1] == out and block.strides == 1:
    return x
  d = block.spatial_dims
  x = block.conv(out, (1,) * d, (block.strides,) * d, name="downsample_conv")(x)
  return ActivationPoint(name="shortcut")(block.norm(name="downsample_bn")(x))


class ResNet(nn.Module):
  """A ResNet; `imagenet_stem` picks the 7x7/2 conv + max-pool stem, else a 3x3/1 conv (CIFAR).
  `spatial_dims`: 2 for images (N, H, W, C), 1 for sequences (N, T, C)."""
  stage_sizes: Sequence[int]
  block: Any
  num_classes: int
  widths: Sequence[int] = (64, 128, 256, 512)
  imagenet_stem: bool = True
  dtype: Any = jnp.float32
  spatial_dims: int = 2

  @nn.compact
  def __call__(self, x, train: bool = True):
    d = self.spatial_dims
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(BatchNorm, use_running_average=not train, dtype=self.dtype)
    x = jnp.asarray(x, self.dtype)
    if self.imagenet_stem:
      x = conv(self.widths[0], (7,) * d, (2,) * d, padding=_pad(7, d), name="stem_conv")(x)
    else:
      x = conv(self.widths[0], (3,) * d, padding=_pad(3, d), name="stem_conv")(x)
    x = nn.relu(norm(name="stem_bn")(x))
    if self.imagenet_stem:
      x = nn.max_pool(x, (3,) * d, strides=(2,) * d, padding=_pad(3, d))
    for i, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block(width, conv, norm, strides, spatial_dims=d, name=f"stage{i + 1}_block{j}")(x)
    x = jnp.mean(x, axis=tuple(range(1, d + 1)))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


_IMAGENET = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
    "resnet101": ((3, 4, 23, 3), Bottleneck),
    "resnet152": ((3, 8, 36, 3), Bottleneck),
}
_CIFAR = {"resnet8": 1, "resnet20": 3, "resnet32": 5, "resnet56": 9}
# 1-D ResNets: three stages of basic blocks over time, widths 64/128/256; the name counts conv and dense
# layers as the CIFAR names do (resnet1d_8: stem, 3 blocks of 2 convs, head).
_SEQUENCE = {"resnet1d_8": 1, "resnet1d_14": 2}
_SEQUENCE_WIDTHS = (64, 128, 256)


def resnet(name: str, num_classes: int, dtype) -> ResNet:
  """The ResNet `name`, one of RESNET_NAMES."""
  if name in _IMAGENET:
    stages, block = _IMAGENET[name]
    return ResNet(stages, block, num_classes, dtype=dtype)
  if name in _CIFAR:
    return ResNet((_CIFAR[name],) * 3, BasicBlock, num_classes, widths=(16, 32, 64), imagenet_stem=False,
                  dtype=dtype)
  return ResNet((_SEQUENCE[name],) * 3, BasicBlock, num_classes, widths=_SEQUENCE_WIDTHS, imagenet_stem=False,
                dtype=dtype, spatial_dims=1)


RESNET_NAMES = tuple(_IMAGENET) + tuple(_CIFAR) + tuple(_SEQUENCE)
