"""Latent banks: the latents of many layers stored as one flat array per field.

Every method's materialize, pull-back, projection and optimizer update are elementwise over a latent's
fields, so they can run on all layers at once. A params tree with its latents banked (`bank_tree`) makes
the train step's latent work a few kernels over the whole model instead of a dozen per layer: one bank per
latent structure (method and bit width) and dtype, each field the layers' latents flattened and
concatenated in tree order. `unbank_tree` gives back the per-layer tree, which is what checkpoints,
exports and every tool read. Latents with a scale (`Scaled`) stay per layer, and so do latents larger
than the `max_size` asked for (`bank_tree`).
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from s3jax.quant.interface import is_latent, quantizer_of
from s3jax.quant.scaled import Scaled


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Slot:
  """Where one layer's latent lives: bank `bank`, elements [offset, offset + size of `shape`). It has no
  leaves, so a tree holding slots flattens to its other leaves only, and the layout is part of its structure."""
  bank: int = dataclasses.field(metadata=dict(static=True))
  offset: int = dataclasses.field(metadata=dict(static=True))
  shape: tuple = dataclasses.field(metadata=dict(static=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Banked:
  """A params tree whose unscaled latents live in `banks`: `rest` is the tree with a `Slot` in place of
  each, and `banks` one latent per structure and dtype whose fields are 1-D."""
  rest: Any
  banks: tuple


def _bankable(x, max_size: int | None) -> bool:
  if not is_latent(x) or isinstance(x, Scaled):
    return False
  leaves = jax.tree.leaves(x)
  return (bool(leaves) and all(l.shape == leaves[0].shape and l.dtype == leaves[0].dtype for l in leaves)
          and (max_size is None or int(np.prod(leaves[0].shape, dtype=np.int64)) <= max_size))


def _group_key(latent):
  return jax.tree.structure(latent), jnp.dtype(jax.tree.leaves(latent)[0].dtype).name


def bank_tree(tree, max_size: int | None = None) -> Banked:
  """`tree` with its unscaled latents moved into banks; with `max_size`, only the latents of at most that
  many weights (larger ones stay per layer). Works on arrays and on abstract shapes."""
  keys, members, sizes = [], [], []

  def to_slot(x):
    if not _bankable(x, max_size):
      return x
    key = _group_key(x)
    if key not in keys:
      keys.append(key), members.append([]), sizes.append(0)
    i = keys.index(key)
    shape = tuple(jax.tree.leaves(x)[0].shape)
    members[i].append(x)
    slot = Slot(i, sizes[i], shape)
    sizes[i] += int(np.prod(shape, dtype=np.int64))
    return slot

  rest = jax.tree.map(to_slot, tree, is_leaf=is_latent)
  banks = tuple(jax.tree.map(lambda *fields: jnp.concatenate([f.reshape(-1) for f in fields]), *group)
                for group in members)
  return Banked(rest=rest, banks=banks)


def _slots(banked: Banked) -> list[Slot]:
  flat = jax.tree_util.tree_flatten(banked.rest, is_leaf=lambda x: isinstance(x, Slot))[0]
  return [x for x in flat if isinstance(x, Slot)]


def _split(array, slots):
  """The per-layer pieces of one bank field, in slot order: one `split` (its transpose is a concatenate,
  so a pull-back through it writes one buffer, not a zero-padded one per layer)."""
  offsets = [s.offset for s in slots[1:]]
  return [p.reshape(s.shape) for p, s in zip(jnp.split(array, offsets), slots)]


def _fill(banked: Banked, per_bank):
  """`banked.rest` with each slot replaced by its piece of `per_bank[slot.bank]` (a pytree of 1-D arrays)."""
  slots = _slots(banked)
  pieces = {}
  for i, bank in enumerate(per_bank):
    mine = [s for s in slots if s.bank == i]
    leaves, treedef = jax.tree.flatten(bank)
    split = [_split(leaf, mine) for leaf in leaves]
    for j, slot in enumerate(mine):
      pieces[(i, slot.offset)] = jax.tree.unflatten(treedef, [parts[j] for parts in split])
  return jax.tree.map(lambda x: pieces[(x.bank, x.offset)] if isinstance(x, Slot) else x, banked.rest,
                      is_leaf=lambda x: isinstance(x, Slot))


def unbank_tree(tree):
  """The per-layer tree of a `Banked` one (anything else is returned as it is)."""
  return _fill(tree, tree.banks) if isinstance(tree, Banked) else tree


def materialize_banked(banked: Banked, materialize_rest):
  """The per-layer weight tree: each bank materialized at once (flat), then split into its layers;
  `materialize_rest` maps the rest (latents not in banks, and other leaves)."""
  flat_weights = [quantizer_of(bank).materialize_latent(bank) for bank in banked.banks]
  return _fill(dataclasses.replace(banked, rest=materialize_rest(banked.rest)), flat_weights)


def map_banked_subtrees(tree, fn, match):
  """`tree` (e.g. an optimizer state) with every subtree for which `match` holds replaced by `fn` of it."""
  return jax.tree.map(lambda x: fn(x) if match(x) else x, tree, is_leaf=match)
