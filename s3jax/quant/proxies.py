"""Gradient proxies packed into one unsigned integer per weight.

A method whose weight and gradients depend only on a little discrete state of its latents (S3's and
DenseShift's sides of zero, DeepShift-PS's rounded values) keeps that state in bit fields of one integer,
1 or 2 bytes a weight instead of 4 per latent: the train step reads it, not the latents, to make the
weights and to pull dL/dW back (`s3jax.quant.tree.gradient_proxies`).
"""
import jax
import jax.numpy as jnp


def packed_dtype(total_bits: int):
  """The narrowest unsigned integer type that holds `total_bits`."""
  for dtype in (jnp.uint8, jnp.uint16, jnp.uint32):
    if total_bits <= jnp.iinfo(dtype).bits:
      return dtype
  raise ValueError(f"{total_bits} proxy bits do not fit in 32.")


def pack_fields(fields, widths) -> jax.Array:
  """Non-negative integer arrays, field i in bits [sum(widths[:i]), sum(widths[:i+1])) of one integer."""
  dtype = packed_dtype(sum(widths))
  packed, offset = jnp.zeros(jnp.shape(fields[0]), dtype), 0
  for field, width in zip(fields, widths):
    packed = packed | (jnp.asarray(field).astype(dtype) << offset)
    offset += width
  return packed


def unpack_fields(packed, widths) -> list[jax.Array]:
  """`pack_fields`' fields, as int32."""
  fields, offset = [], 0
  for width in widths:
    fields.append(((packed >> offset) & ((1 << width) - 1)).astype(jnp.int32))
    offset += width
  return fields


def pack_sides(conditions) -> jax.Array:
  """One bit per condition (a latent's side of zero): all that a straight-through sign or step reads."""
  return pack_fields(list(conditions), [1] * len(conditions))


def unpack_sides(packed, count: int, dtype) -> list[jax.Array]:
  """`pack_sides`' bits as latents of `dtype`: +1 where set, else -1 (a sign or step of them is exact)."""
  return [(2 * bit - 1).astype(dtype) for bit in unpack_fields(packed, [1] * count)]
