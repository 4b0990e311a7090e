"""A plain Flax (linen) Vision Transformer (Dosovitskiy et al. 2021): patch embedding, a class token and
learned position embeddings, pre-LayerNorm encoder blocks (multi-head self-attention, then a GELU MLP),
a final LayerNorm and a linear head on the class token. No dropout: `train` is accepted for the trainer's
calling convention and changes nothing.

Parameter names are a contract with `QUANT_PATTERNS` (the kernels a run quantizes by default): blocks are 'block<i>', their
attention is Flax's MultiHeadDotProductAttention named 'attention' (projections 'query', 'key', 'value',
'out', whose kernels `s3jax.quant.layout_for` reads as dense), and their MLP kernels are 'mlp_fc1' and
'mlp_fc2'; the patch embedding is 'patch_embed' and the classifier 'head'.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# The attention projections and MLP kernels; patch embedding and head stay float.
QUANT_PATTERNS = (r"block\d+/attention/(query|key|value|out)/kernel", r"block\d+/mlp_fc\d/kernel")


class EncoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm(dtype=self.dtype, name="ln1")(x)
    y = nn.MultiHeadDotProductAttention(self.num_heads, dtype=self.dtype, name="attention")(y, y)
    x = x + y
    y = nn.LayerNorm(dtype=self.dtype, name="ln2")(x)
    y = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_fc1")(y))
    return x + nn.Dense(x.shape[-1], dtype=self.dtype, name="mlp_fc2")(y)


class ViT(nn.Module):
  """Images (N, H, W, C) -> logits; H and W must be multiples of `patch_size`."""
  num_classes: int
  patch_size: int
  hidden: int
  depth: int
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    del train  # no dropout, no BatchNorm
    x = jnp.asarray(x, self.dtype)
    p = self.patch_size
    x = nn.Conv(self.hidden, (p, p), (p, p), padding="VALID", dtype=self.dtype, name="patch_embed")(x)
    x = x.reshape(x.shape[0], -1, self.hidden)
    cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.hidden))
    # Built from x's own slice, so it shares x's batch sharding under the trainer's explicit-sharding mesh.
    cls_tokens = jnp.zeros_like(x[:, :1]) + cls.astype(x.dtype)
    x = jnp.concatenate([cls_tokens, x], axis=1)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], self.hidden))
    x = x + pos.astype(x.dtype)
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dtype, name=f"block{i}")(x)
    x = nn.LayerNorm(dtype=self.dtype, name="final_ln")(x[:, 0])
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


# (patch_size, hidden, depth, num_heads, mlp_dim). vit_tiny: 16 tokens on a 28 px digit, for CPUs;
# vit_s16 and vit_b16 are the ImageNet ViT-S/16 and ViT-B/16.
VITS = {
    "vit_tiny": (7, 64, 4, 4, 128),
    "vit_s16": (16, 384, 12, 6, 1536),
    "vit_b16": (16, 768, 12, 12, 3072),
}


def vit(name: str, num_classes: int, dtype) -> ViT:
  return ViT(num_classes, *VITS[name], dtype=dtype)
