"""How a kernel's shape reads as inputs and outputs: its fans (for inits and fixed scales) and the
output-channel shape a per-channel scale takes."""
import dataclasses

import numpy as np

from s3jax.errors import LayoutError

LAYOUTS = ("auto", "conv", "dense")
# Flax's attention (linen MultiHeadDotProductAttention, nnx MultiHeadAttention) names its DenseGeneral
# projections: query/key/value kernels are (features, heads, head_dim), out is (heads, head_dim, features).
ATTENTION_INPUT_AXES = {"query": 1, "key": 1, "value": 1, "out": 2}


@dataclasses.dataclass(frozen=True)
class KernelFans:
  """fan_in, fan_out and the trailing output-channel shape of a kernel (the scale's shape)."""
  fan_in: int
  fan_out: int
  channels: tuple[int, ...]


def kernel_fans(shape, layout: str = "auto", dense_in_axes: int = 1) -> KernelFans:
  """Fans of a kernel. 'conv': a Flax conv kernel (spatial..., in, out); 'dense': the first
  `dense_in_axes` axes are inputs, the rest outputs (DenseGeneral, e.g. attention's (768, 12, 64));
  'auto': rank 2 is dense, ranks 4 and 5 are 2-D and 3-D convs, and rank 3, which could be either, is a
  LayoutError asking for the layout (`to_latents` settles it from the param path: `layout_for`)."""
  shape = tuple(int(d) for d in shape)
  if len(shape) < 2:
    raise LayoutError(f"only kernels of rank >= 2 can be quantized, got shape {shape}.")
  if layout == "auto" and len(shape) == 3:
    raise LayoutError(f"a kernel of shape {shape} may be a 1-D conv (width, in, out) or a dense kernel with "
                      "several axes; pass layout='conv', or layout='dense' with dense_in_axes.")
  if layout == "auto":
    layout = "dense" if len(shape) == 2 else "conv"
  if layout == "conv":
    receptive = int(np.prod(shape[:-2], dtype=np.int64))
    return KernelFans(receptive * shape[-2], receptive * shape[-1], shape[-1:])
  if not 0 < dense_in_axes < len(shape):
    raise LayoutError(f"dense_in_axes={dense_in_axes} does not split a kernel of shape {shape}.")
  ins, outs = shape[:dense_in_axes], shape[dense_in_axes:]
  return KernelFans(int(np.prod(ins)), int(np.prod(outs)), outs)


def layout_for(path: str, shape) -> tuple[str, int]:
  """(layout, dense_in_axes) for a kernel at `path` ('.../<module>/kernel') that its quantizer reads with
  layout='auto': Flax attention's query/key/value/out projections are dense with 1, 1, 1 and 2 input
  axes; a rank-3 kernel in a module whose name contains 'conv' is a 1-D conv; anything else keeps 'auto'
  (rank 2 dense, ranks 4-5 conv, and rank 3 a LayoutError that asks for the layout)."""
  parts = path.split("/")
  module = parts[-2] if len(parts) > 1 else ""
  if module in ATTENTION_INPUT_AXES and len(shape) == 3:
    return "dense", ATTENTION_INPUT_AXES[module]
  if len(shape) == 3 and "conv" in module.lower():
    return "conv", 1
  return "auto", 1
