"""Turn chosen kernels of any params pytree (e.g. a Flax `params` dict) into latents of any method, and back.

Kernels are chosen by `Rule`s (`s3jax.quant.rules`): a regex on the '/'-joined param path, e.g.
'stage1_block0/conv1/kernel', and the quantizer (or FULL_PRECISION) the kernels it matches get.
"""
import dataclasses
import os
import sys
import warnings
import zlib
from typing import Sequence

import jax
import jax.numpy as jnp

from s3jax.errors import ConfigError, LayoutError
from s3jax.quant.interface import is_latent, project, quantizer_of
from s3jax.quant.interface import materialize as materialize_latent
from s3jax.quant.proxies import gradient_proxy, latent_from_proxy
from s3jax.quant.banks import Banked, materialize_banked
from s3jax.quant.layout import layout_for
from s3jax.quant.rules import Rule, RuleMatches, checked_rules
from s3jax.quant.scaled import Scaled

FLOAT_ROLE = "float"  # the role of an ordinary (not quantized) parameter


def path_name(path) -> str:
  """'a/b/kernel' for a jax key path."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _leaf_key(key, path: str):
  # Keyed by the path, so a leaf's init does not depend on which other leaves exist.
  return jax.random.fold_in(key, zlib.crc32(path.encode()) & 0x7FFFFFFF)


# Library frames between a user's call and a warning: s3jax's own and the jax tree maps it calls through.
_LIBRARY_DIRS = tuple(os.path.dirname(f) + os.sep for f in (os.path.dirname(__file__), jax.__file__))


def _caller_stacklevel() -> int:
  """The `stacklevel` that makes a warning name the first frame outside s3jax and jax: the user's call."""
  frame, level = sys._getframe(2), 2
  while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
    frame, level = frame.f_back, level + 1
  return level


def latent_dtype(dtype, path: str):
  if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
    warnings.warn(f"{path} is {jnp.dtype(dtype).name}; its latents are made float32, since the small "
                  "updates they get (the dense penalty's 1e-5 steps, say) vanish at lower precision. "
                  "Materialized weights are float32 too; Flax layers cast them to their compute dtype.",
                  stacklevel=_caller_stacklevel())
    return jnp.float32
  return dtype


def map_kernels(params, rules: Sequence[Rule], fn):
  """Replaces each leaf that `rules` choose for a quantizer `q` by `fn(name, leaf, q)`, where `q` has the
  kernel's layout settled (`layout_for`); other leaves (and those of FULL_PRECISION rules) pass through.
  A kernel whose layout cannot be settled is a ConfigError naming its path."""
  match = RuleMatches(checked_rules(rules))

  def convert(path, leaf):
    name = path_name(path)
    rule = match(name)
    if rule is None or not rule.quantizes:
      return leaf
    pattern, q = rule.pattern, rule.quantizer
    if getattr(leaf, "ndim", 0) < 2:
      raise ConfigError(f"Rule {pattern!r} chose {name} of shape {leaf.shape}; only kernels "
                        "(rank >= 2) can be quantized.")
    if q.layout == "auto":
      layout, in_axes = layout_for(name, leaf.shape)
      q = dataclasses.replace(q, layout=layout, dense_in_axes=in_axes) if layout != "auto" else q
    try:
      return fn(name, leaf, q)
    except LayoutError as err:
      raise ConfigError(f"{name}: {err} Use a rule (pattern, quantizer(..., layout=...)) for it.") from None

  out = jax.tree_util.tree_map_with_path(convert, params)
  unused = match.unused()
  if unused:
    raise ConfigError(f"Quantization rule(s) {unused} matched no parameter path; "
                      f"paths look like {_example_paths(params)}.")
  return out


def to_latents(params, rules: Sequence[Rule], key):
  """Replaces the kernels chosen by `rules` with freshly initialised latents of their quantizer.

  The original values of chosen kernels are discarded: every method trains from its own random init (to
  start from them instead, see `s3jax.quant.conversion`). Latents are float32 (or float64) even when the
  kernel is bfloat16, with a warning. Returns a tree of the same structure.
  """
  if key is None:
    raise ConfigError("to_latents needs a PRNG key, e.g. jax.random.key(0).")
  return map_kernels(params, rules, lambda name, leaf, q: q.init(
      _leaf_key(key, name), leaf.shape, latent_dtype(leaf.dtype, name)))


def _example_paths(params, n: int = 3):
  return [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]][:n]


def materialize_tree(tree):
  """Replaces every latent by its discrete weight; other leaves pass through. A `Banked` tree gives the
  per-layer weight tree (each bank materialized at once, then split)."""
  if isinstance(tree, Banked):
    return materialize_banked(tree, materialize_tree)
  return jax.tree.map(lambda x: materialize_latent(x) if is_latent(x) else x, tree, is_leaf=is_latent)


def project_tree(tree):
  """Applies each method's latent constraint (DeepShift's clamps); call it after every optimizer update."""
  return jax.tree.map(lambda x: project(x) if is_latent(x) else x, tree, is_leaf=is_latent)


def gradient_proxies(tree):
  """Each latent replaced by its method's gradient proxy (`s3jax.quant.proxies.gradient_proxy`, a `Scaled`
  keeping its scale) where it has one, the latent itself where not: all that `proxy_pullback` and the
  weights need of the latents, in 1-2 bytes a weight instead of 4 per latent."""

  def proxy(x):
    if not is_latent(x):
      return x
    packed = gradient_proxy(quantizer_of(x), _unscaled(x))
    return x if packed is None else _rescaled(x, packed)

  return jax.tree.map(proxy, tree, is_leaf=is_latent)


def proxy_floats(proxies, like):
  """`gradient_proxies(like)` back as latents in the dtypes of `like`'s: the same weights and gradients."""

  def floats(x, p):
    if not is_latent(x) or jax.tree.structure(p) == jax.tree.structure(x):
      return p  # an ordinary parameter, or a latent of a method without a proxy
    dtype = jax.tree.leaves(_unscaled(x))[0].dtype
    return _rescaled(p, latent_from_proxy(quantizer_of(x), _unscaled(p), dtype))

  return jax.tree.map(floats, like, proxies, is_leaf=is_latent)


def _unscaled(x):
  return x.latent if isinstance(x, Scaled) else x


def _rescaled(like, unscaled):
  """`unscaled` in place of `like`'s unscaled part, inside `like`'s `Scaled` wrapper (scale kept) if any."""
  return dataclasses.replace(like, latent=unscaled) if isinstance(like, Scaled) else unscaled


def proxy_pullback(proxies, like, weight_grads):
  """dL/d(latents) from dL/dW, exactly `jax.vjp(materialize_tree, params)[1](weight_grads)`, computed from
  `gradient_proxies(params)`; `like` is `params` (or their shapes).

  A train step can take the proxies before its update and pull back after it has started overwriting the
  latents in place: nothing here reads them."""
  return jax.vjp(materialize_tree, proxy_floats(proxies, like))[1](weight_grads)[0]


def exact_pullback(tree) -> bool:
  """True when every latent's pull-back multiplies dL/dW only by powers of two (its method's
  `exact_pullback`, and no scale): the gradients are then exact, whatever order XLA computes them in."""
  latents = [x for x in jax.tree.leaves(tree, is_leaf=is_latent) if is_latent(x)]
  return all(not isinstance(x, Scaled) and quantizer_of(x).exact_pullback for x in latents)


def latents_with_paths(tree) -> list[tuple[str, object]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_latent)[0]
  return [(path_name(p), x) for p, x in leaves if is_latent(x)]


def quantized_paths(tree) -> list[str]:
  """Paths of the latents in `tree`, in tree order."""
  return [p for p, _ in latents_with_paths(tree)]


def role_tree(tree):
  """`tree`'s structure with each leaf replaced by its role: 'float' for ordinary parameters, and for
  latents one of 'sign', 'sparse', 'shift', 'weight', 'scale' (fixed), 'log_scale' (learned).

  Built from structure only, so it is the same for params, gradients, updates and abstract shapes.
  """
  return jax.tree.map(lambda x: quantizer_of(x).roles(x) if is_latent(x) else FLOAT_ROLE, tree,
                      is_leaf=is_latent)


def role_mask(tree, roles) -> object:
  """A bool tree of `tree`'s structure: True where a leaf's role is in `roles`."""
  roles = (roles,) if isinstance(roles, str) else tuple(roles)
  return jax.tree.map(lambda role: role in roles, role_tree(tree))


def sparse_mask(tree):
  """True exactly at S3's sparse latents Wz (the leaves the dense penalty acts on)."""
  return role_mask(tree, "sparse")
