"""Gradient proxies packed into one unsigned integer per weight.

A method whose weight and gradients depend only on a little discrete state of its latents (S3's and
DenseShift's sides of zero, DeepShift-PS's rounded values) keeps that state in bit fields of one integer,
1 or 2 bytes a weight instead of 4 per latent: the train step reads it, not the latents, to make the
weights and to pull dL/dW back (`s3jax.quant.tree.gradient_proxies`).

The feature's protocol lives here, beside it: `gradient_proxy(q, latent)` and `latent_from_proxy(q, proxy,
dtype)`, one implementation per method class (`functools.singledispatch`); a method without one has no
proxy, and its latents are read as they are.
"""
import functools

import jax
import jax.numpy as jnp

from s3jax.quant.deepshift import DeepShiftPSLatent, DeepShiftPSQuantizer
from s3jax.quant.denseshift import DenseShiftLatent, DenseShiftQuantizer, num_chain_links
from s3jax.quant.interface import Quantizer
from s3jax.quant.s3 import S3Latent, S3Quantizer, num_shift_latents


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


@functools.singledispatch
def gradient_proxy(q: Quantizer, latent):
  """One unsigned integer per weight with all that `latent`'s (unscaled) weight and gradients depend on, or
  None where `q`'s method has no proxy."""
  del q, latent
  return None


@functools.singledispatch
def latent_from_proxy(q: Quantizer, proxy, dtype):
  """A latent of `dtype` with exactly the weight and gradients of the one `proxy` was taken from."""
  del proxy, dtype
  raise NotImplementedError(f"{q.method} has no gradient proxy.")


# S3 and DenseShift: the straight-through sign and steps pass gradients through unchanged, so only which
# side of zero each latent lies on matters: +-1 reproduces sgn and step exactly (sgn(0) = +1, step(0) = 0).
@gradient_proxy.register
def _(q: S3Quantizer, latent):
  return pack_sides([latent.sign >= 0, latent.sparse > 0, *(s > 0 for s in latent.shift)])


@latent_from_proxy.register
def _(q: S3Quantizer, proxy, dtype):
  sign, sparse, *shift = unpack_sides(proxy, 2 + num_shift_latents(q.bits), dtype)
  return S3Latent(sign=sign, sparse=sparse, shift=tuple(shift))


@gradient_proxy.register
def _(q: DenseShiftQuantizer, latent):
  return pack_sides([latent.sign >= 0, *(t > 0 for t in latent.shift)])


@latent_from_proxy.register
def _(q: DenseShiftQuantizer, proxy, dtype):
  sign, *shift = unpack_sides(proxy, 1 + num_chain_links(q.bits), dtype)
  return DenseShiftLatent(sign=sign, shift=tuple(shift))


# DeepShift-PS: the gradients read only round(clip(P)) (through W) and sign(round(S)): P - smin and S + 1 in
# bit fields.
def _ps_widths(q: DeepShiftPSQuantizer):
  return ((-q.smin).bit_length(), 2)


@gradient_proxy.register
def _(q: DeepShiftPSQuantizer, latent):
  exponent = jnp.round(jnp.clip(latent.shift, q.smin, 0)).astype(jnp.int32) - q.smin
  return pack_fields([exponent, jnp.sign(jnp.round(latent.sign)).astype(jnp.int32) + 1], _ps_widths(q))


@latent_from_proxy.register
def _(q: DeepShiftPSQuantizer, proxy, dtype):
  exponent, sign = unpack_fields(proxy, _ps_widths(q))
  return DeepShiftPSLatent(shift=(exponent + q.smin).astype(dtype), sign=(sign - 1).astype(dtype), bits=q.bits)
