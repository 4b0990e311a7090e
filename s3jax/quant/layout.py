"""How a kernel's shape reads as inputs and outputs: its fans (for inits and fixed scales) and the
output-channel shape a per-channel scale takes."""
import dataclasses

import numpy as np

from s3jax.errors import ConfigError

LAYOUTS = ("auto", "conv", "dense")


@dataclasses.dataclass(frozen=True)
class KernelFans:
  """fan_in, fan_out and the trailing output-channel shape of a kernel (the scale's shape)."""
  fan_in: int
  fan_out: int
  channels: tuple[int, ...]


def kernel_fans(shape, layout: str = "auto", dense_in_axes: int = 1) -> KernelFans:
  """Fans of a kernel. 'conv': a Flax conv kernel (spatial..., in, out); 'dense': the first
  `dense_in_axes` axes are inputs, the rest outputs (DenseGeneral, e.g. attention's (768, 12, 64));
  'auto': rank 2 is dense, higher ranks are conv."""
  shape = tuple(int(d) for d in shape)
  if len(shape) < 2:
    raise ConfigError(f"only kernels of rank >= 2 can be quantized, got shape {shape}.")
  if layout == "auto":
    layout = "dense" if len(shape) == 2 else "conv"
  if layout == "conv":
    receptive = int(np.prod(shape[:-2], dtype=np.int64))
    return KernelFans(receptive * shape[-2], receptive * shape[-1], shape[-1:])
  if not 0 < dense_in_axes < len(shape):
    raise ConfigError(f"dense_in_axes={dense_in_axes} does not split a kernel of shape {shape}.")
  ins, outs = shape[:dense_in_axes], shape[dense_in_axes:]
  return KernelFans(int(np.prod(ins)), int(np.prod(outs)), outs)
