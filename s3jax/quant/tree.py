"""Turn chosen kernels of any params pytree (e.g. a Flax `params` dict) into S3 latents and back.

Layers are chosen by regex rules on the '/'-joined param path, e.g. 'stage1_block0/conv1/kernel'.
Each rule is `(pattern, action)` with action 's3' (quantize) or 'float' (keep full precision);
a bare string means 's3'. The first rule whose pattern `re.fullmatch`es a path wins (the qwix
convention); paths no rule matches stay float. A rule that matches no path is an error.
"""
import re
import zlib
from typing import Sequence

import jax

from s3jax.quant.latent import S3Latent, init_latent, materialize, num_shift_latents

ACTIONS = ("s3", "float")

# The s3jax ResNets name their residual blocks 'stage<i>_block<j>' and the stem/head 'stem_conv'/'head':
# quantize every conv kernel in the stages (downsample 1x1 convs included); stem, BN and head stay float.
DEFAULT_RESNET_RULES = ((r"stage\d+_block\d+/.*conv.*/kernel", "s3"),)


def path_str(path) -> str:
  """'a/b/kernel' for a jax key path."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _is_latent(x) -> bool:
  return isinstance(x, S3Latent)


def normalize_rules(rules) -> tuple[tuple[str, str], ...]:
  """Validates rules and returns them as ((pattern, action), ...)."""
  if isinstance(rules, str):
    rules = (rules,)
  out = []
  for rule in rules:
    pattern, action = (rule, "s3") if isinstance(rule, str) else tuple(rule)
    if action not in ACTIONS:
      raise ValueError(f"Rule {pattern!r} has action {action!r}; use one of {ACTIONS}.")
    try:
      re.compile(pattern)
    except re.error as err:
      raise ValueError(f"Rule pattern {pattern!r} is not a valid regex: {err}.") from None
    out.append((pattern, action))
  return tuple(out)


def _leaf_key(key, path: str):
  # Keyed by the path, so a leaf's init does not depend on which other leaves exist.
  return jax.random.fold_in(key, zlib.crc32(path.encode()) & 0x7FFFFFFF)


def to_latents(params, rules: Sequence = DEFAULT_RESNET_RULES, key=None, bits: int = 3,
               scheme: str = "normal"):
  """Replaces the kernels chosen by `rules` with freshly initialised `S3Latent`s (DESIGN §2 init).

  The original values of chosen kernels are discarded: S3 trains from random latents. Returns a tree of
  the same structure where each chosen leaf is an S3Latent of that leaf's shape and dtype.
  """
  num_shift_latents(bits)  # validates bits
  if key is None:
    raise ValueError("to_latents needs a PRNG key, e.g. jax.random.key(0).")
  rules = normalize_rules(rules)
  used = [False] * len(rules)

  def convert(path, leaf):
    name = path_str(path)
    for i, (pattern, action) in enumerate(rules):
      if re.fullmatch(pattern, name):
        used[i] = True
        if action == "float":
          return leaf
        if getattr(leaf, "ndim", 0) < 2:
          raise ValueError(f"Rule {pattern!r} chose {name} of shape {leaf.shape}; only kernels "
                           "(rank >= 2) can be quantized.")
        return init_latent(_leaf_key(key, name), leaf.shape, bits, scheme, leaf.dtype)
    return leaf

  out = jax.tree_util.tree_map_with_path(convert, params)
  unused = [pattern for (pattern, _), hit in zip(rules, used) if not hit]
  if unused:
    raise ValueError(f"Quantization rule(s) {unused} matched no parameter path; "
                     f"paths look like {_example_paths(params)}.")
  return out


def _example_paths(params, n: int = 3):
  paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  return paths[:n]


def materialize_tree(tree):
  """Replaces every S3Latent by its discrete weight; other leaves pass through."""
  return jax.tree.map(lambda x: materialize(x) if _is_latent(x) else x, tree, is_leaf=_is_latent)


def latents_with_paths(tree) -> list[tuple[str, S3Latent]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_latent)[0]
  return [(path_str(p), x) for p, x in leaves if _is_latent(x)]


def quantized_paths(tree) -> list[str]:
  """Paths of the S3 latents in `tree`, in tree order."""
  return [p for p, _ in latents_with_paths(tree)]


def sparse_mask(tree):
  """A bool tree of `tree`'s structure: True exactly at the `sparse` field of each S3Latent.

  Built from structure only, so it is the same for params, gradients and updates.
  """
  def mark(x):
    if _is_latent(x):
      return S3Latent(sign=False, sparse=True, shift=(False,) * len(x.shift))
    return False
  return jax.tree.map(mark, tree, is_leaf=_is_latent)
