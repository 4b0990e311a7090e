"""A BatchNorm right after a quantized Dense layer, folded into that layer for LiteRT.

LiteRT's converter folds a BatchNorm into the conv before it, not into a `FULLY_CONNECTED`: an MLP's
hidden layers would keep a float multiply and add between their int8 input and the next layer's grid, and
run in float. Folded here, the layer's integers stay as they are; its per-channel scale becomes
`scale * |a|` (a channel with `a < 0` negates its integers, as LiteRT's scales are positive) and it gains
the bias `b`, with `a = gamma / sqrt(var + eps)` and `b = beta - mean * a` the eval-mode BatchNorm.
"""
import functools
import operator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def dense_norm_pairs(model, variables: dict, images, dense_layers) -> dict[str, tuple[str, float]]:
  """{Dense path: (BatchNorm path, its epsilon)} for each Dense layer of `dense_layers` whose output goes
  straight into a BatchNorm, traced on one call `model.apply(variables, images, train=False)` (shapes)."""
  pairs, outputs = {}, {}

  def interceptor(next_fun, args, kwargs, context):
    module, name = context.module, "/".join(context.module.path)
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    if isinstance(module, nn.BatchNorm) and args and id(args[0]) in outputs:
      pairs[outputs[id(args[0])][0]] = (name, float(module.epsilon))
    out = next_fun(*args, **kwargs)
    if type(module) is nn.Dense and name in dense_layers:
      outputs[id(out)] = (name, out)  # the output kept alive, so that its id stays its own
    return out

  def call(variables, images):
    with nn.intercept_methods(interceptor):
      return model.apply(variables, images, train=False)

  jax.eval_shape(call, variables, images)
  return pairs


def folded(ints, scale, norm_params: dict, norm_stats: dict, epsilon: float, dense_bias=0.0):
  """(integers, per-channel scale > 0, bias) of a Dense layer's levels `ints * scale` (per output channel,
  the last axis) and its `dense_bias`, with the BatchNorm of `norm_params` ('scale', 'bias') and
  `norm_stats` ('mean', 'var') folded in (see the module doc)."""
  a = np.asarray(norm_params.get("scale", 1.0), np.float64) / np.sqrt(np.asarray(norm_stats["var"], np.float64) + epsilon)
  bias = np.asarray(norm_params.get("bias", 0.0), np.float64) + (
      np.asarray(dense_bias, np.float64) - np.asarray(norm_stats["mean"], np.float64)) * a
  sign = np.where(a < 0, -1, 1)
  return ((ints * sign).astype(np.int8), (np.asarray(scale, np.float64) * np.abs(a)).astype(np.float32),
          np.broadcast_to(bias, ints.shape[-1:]).astype(np.float32))


def fold_into_plans(export, model, planned: dict, plans: dict) -> dict[str, tuple[np.ndarray, str]]:
  """Folds each BatchNorm right after a quantized Dense of the Flax `model` into that layer's LiteRT plan
  (integers, scale, type, axis), in `planned` (the params tree) and `plans` ({layer path: plan}); returns
  {Dense path: (its new bias, the BatchNorm's path)}."""
  is_plan = lambda x: isinstance(x, tuple)  # noqa: E731
  weights = jax.tree.map(lambda p: p[0] * p[1] if is_plan(p) else p, planned, is_leaf=is_plan)
  images = jax.ShapeDtypeStruct((1, *export.input_shape), jnp.float32)
  pairs = dense_norm_pairs(model, {"params": weights, "batch_stats": export.batch_stats}, images, set(plans))
  biases = {}
  for dense, (norm, epsilon) in pairs.items():
    layer = functools.reduce(operator.getitem, dense.split("/"), planned)
    norm_params, norm_stats = (functools.reduce(operator.getitem, norm.split("/"), tree)
                               for tree in (export.params, export.batch_stats))
    ints, scale, dtype, axis = layer["kernel"]
    ints, scale, bias = folded(ints, scale, norm_params, norm_stats, epsilon, layer.get("bias", 0.0))
    layer["kernel"] = plans[dense] = (ints, scale, dtype, axis)
    biases[dense] = (bias, norm)
  return biases
