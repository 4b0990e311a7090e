"""Quantized layer inputs for any Linen model, without editing it (docs/own-model.md, "Quantized activations").

`quantized_inputs(rules, aq)` is a context manager around `model.init` / `model.apply`: through
`nn.intercept_methods` it quantizes the first argument of the `__call__` of each layer the rules choose (a
Dense, DenseGeneral or Conv: the input its kernel multiplies; rules match '<layer path>/kernel'), and of each
`ActivationPoint` they choose (rules match its path). Per layer or point, in the module's own scope:
- lsq: the step size, params `input_step`, initialized from the batch the model is initialized with;
- lsq and calibrated: the 0/1 signedness flag, batch_stats `input_signed`;
- calibrated: the running max |input|, batch_stats `input_abs_max`, updated when batch_stats is mutable.
`activation_layers(model, variables, x)` names them. `QuantizedInputs(model, rules, aq)` is
`model` with the block built into its `init` and `apply`; `calibrated_variables` sets the variables again
from a batch (a model initialized on shapes, then calibrated on data: the trainer).
"""
import contextlib
import dataclasses
import functools
from typing import NamedTuple, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from s3jax.errors import ConfigError
from s3jax.models.activation_point import ActivationPoint
from s3jax.quant import activations
from s3jax.quant.activations import ActivationQuantizer
from s3jax.quant.rules import Rule, RuleMatches, checked_rules
from s3jax.quant.tree import materialize_tree

STEP, SIGNED, ABS_MAX = "input_step", "input_signed", "input_abs_max"
KERNEL = "/kernel"


class LayerChoice(NamedTuple):
  pattern: str
  quantizes: bool


def layer_choices(rules: Sequence[Rule | str]) -> tuple[LayerChoice, ...]:
  """Rules as (pattern, whether its layers' inputs are quantized): a `Rule` quantizes where it quantizes the
  kernel (FULL_PRECISION excludes), a bare pattern always."""
  rules = (rules,) if isinstance(rules, (str, Rule)) else tuple(rules)
  checked_rules([r for r in rules if not isinstance(r, str)])       # the usual error for anything else
  return tuple(LayerChoice(r, True) if isinstance(r, str) else LayerChoice(r.pattern, r.quantizes) for r in rules)


def activation_layers(model: "QuantizedInputs", variables: dict, *args, **kwargs) -> tuple[str, ...]:
  """The paths of the layers ('stage1_block0/conv1') and activation points ('stage1_block0/branch') whose
  input `model` quantizes, in the order it calls them: traced on one call `model.apply(variables, *args,
  **kwargs)` (shapes only; params may hold latents). A rule that chooses none of them is an error."""
  layers = []

  def call(variables, *args):
    with quantized_inputs(model.rules, model.aq) as chosen:
      out = model.model.apply({**variables, "params": materialize_tree(variables["params"])}, *args, **kwargs)
    layers.extend(dict.fromkeys(chosen))
    return out

  jax.eval_shape(call, variables, *args)
  return tuple(layers)


def quantize_input(module: nn.Module, x, aq: ActivationQuantizer, calibrate: bool = False):
  """`x` quantized by `aq`, with the layer's variables created in `module`'s scope (see the module doc).
  `calibrate`: set them again from this batch, as at init (params and batch_stats must be mutable)."""
  if aq.kind == "fixed_point":
    return activations.round_to_fixed(x, aq.integer_bits, aq.fraction_bits)
  if calibrate:
    module.put_variable("batch_stats", SIGNED, activations.initial_signed(x, aq.signed))
  signed = module.variable("batch_stats", SIGNED, activations.initial_signed, x, aq.signed).value
  if calibrate:
    if aq.kind == "lsq":
      module.put_variable("params", STEP, activations.lsq_initial_step(x, aq.bits, signed))
    else:
      module.put_variable("batch_stats", ABS_MAX, jnp.max(jnp.abs(x)).astype(jnp.float32))
  if aq.kind == "lsq":
    step = module.param(STEP, lambda _: activations.lsq_initial_step(x, aq.bits, signed))
    return activations.lsq(x, step, aq.bits, signed).astype(x.dtype)
  abs_max = module.variable("batch_stats", ABS_MAX, lambda: jnp.max(jnp.abs(x)).astype(jnp.float32))
  if module.is_mutable_collection("batch_stats") and not (module.is_initializing() or calibrate):
    abs_max.value = activations.running_abs_max(abs_max.value, x, aq.momentum)
  step = activations.calibrated_step(abs_max.value, aq.bits, signed)
  return activations.calibrated(x, step, aq.bits, signed).astype(x.dtype)


def _rule_path(module) -> str | None:
  """The path rules match for `module`: its kernel's ('<path>/kernel') if it owns a kernel its input
  multiplies (Dense, DenseGeneral, Conv, ...), its own if it is an `ActivationPoint`; else None (a block or a
  norm whose path a broad pattern might also match)."""
  path = "/".join(module.scope.path)
  if isinstance(module, ActivationPoint):
    return path
  return path + KERNEL if hasattr(module, "kernel_init") else None


@contextlib.contextmanager
def quantized_inputs(rules: Sequence[Rule | str], aq: ActivationQuantizer, *, calibrate: bool = False):
  """Within the block, the `__call__` input of each kernel layer whose kernel path ('<module path>/kernel')
  and of each `ActivationPoint` whose path a quantizing rule or a bare pattern chooses (first match wins, as
  for weights) is quantized by `aq`. A rule that nothing called matched is an error at the block's end (a
  misspelt pattern would quantize nothing). `calibrate`: each chosen layer's variables are set again from
  the batch it sees (`quantize_input`). Yields the list of the chosen module paths, filled as they run."""
  match, chosen = RuleMatches(layer_choices(rules)), []
  if not aq.enabled:
    yield chosen
    return

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    path = _rule_path(module) if context.method_name == "__call__" and args and module.scope is not None else None
    rule = None if path is None else match(path)
    if rule is None or not rule.quantizes:
      return next_fun(*args, **kwargs)
    chosen.append("/".join(module.scope.path))
    return next_fun(quantize_input(module, args[0], aq, calibrate), *args[1:], **kwargs)

  with nn.intercept_methods(interceptor):
    yield chosen
  unused = match.unused()
  if unused:
    raise ConfigError(f"Activation rule(s) {unused} matched no kernel layer or activation point the model "
                      "called; patterns are on kernel paths ('stage1_block0/conv1/kernel'), as for weights, or "
                      "on activation point paths ('stage1_block0/branch').")


@dataclasses.dataclass(frozen=True)
class QuantizedInputs:
  """`model` whose `init` and `apply` run inside `quantized_inputs(rules, aq)`: the same variable paths, the
  same call signatures (other attributes are the model's). What the trainer and an export build when a run
  quantizes activations; inside a module of your own, use the `quantized_inputs` block instead."""
  model: nn.Module
  rules: tuple[Rule | str, ...]
  aq: ActivationQuantizer

  def init(self, *args, **kwargs):
    with self.block():
      return self.model.init(*args, **kwargs)

  def apply(self, *args, **kwargs):
    with self.block():
      return self.model.apply(*args, **kwargs)

  def block(self):
    """The `quantized_inputs` block this model runs in (for a caller that adds interceptors of its own
    around `self.model`: entered first, it quantizes before theirs run)."""
    return quantized_inputs(self.rules, self.aq)

  def __getattr__(self, name):
    if name.startswith("__") or name == "model":  # copy and pickle probe before `model` is set
      raise AttributeError(name)
    return getattr(self.model, name)


def calibrated_variables(model: QuantizedInputs, variables: dict, x, **kwargs) -> dict:
  """`variables` with each chosen layer's step sizes, signedness and running max set from the batch `x`
  (LSQ's init over a first batch), the rest unchanged: the model is initialized on shapes, then calibrated on
  data. Params may hold latents (they are materialized for the call). `kwargs` go to the model: train=True
  where the model normalizes with batch statistics in training, as it will see its inputs then (BatchNorm's
  running statistics are kept as they were)."""
  plain = {**variables, "params": materialize_tree(variables["params"])}
  with quantized_inputs(model.rules, model.aq, calibrate=True):
    _, updated = model.model.apply(plain, x, mutable=["params", "batch_stats"], **kwargs)
  merged = {}
  for collection, names in (("params", (STEP,)), ("batch_stats", (SIGNED, ABS_MAX))):
    old = flax.traverse_util.flatten_dict(variables.get(collection, {}))
    new = flax.traverse_util.flatten_dict(updated.get(collection, {}))
    merged[collection] = flax.traverse_util.unflatten_dict(
        {key: new[key] if key[-1] in names else value for key, value in old.items()})
  return {**variables, **merged}


def with_input_variables(trees, expected):
  """`trees` (a tuple of variable trees: params, batch_stats) with the quantized-input variables the same
  trees of a model that quantizes its inputs (`expected`, abstract) hold and `trees` lack, as placeholder
  ones: a float model's converted weights, before `calibrated_variables` sets them from a batch."""
  out = []
  for tree, want in zip(trees, expected):
    flat, wanted = flax.traverse_util.flatten_dict(tree), flax.traverse_util.flatten_dict(want)
    flat |= {key: jnp.ones(leaf.shape, leaf.dtype) for key, leaf in wanted.items()
             if key not in flat and key[-1] in (STEP, SIGNED, ABS_MAX)}
    out.append(flax.traverse_util.unflatten_dict(flat))
  return tuple(out)


def unwrapped(model):
  """(the Flax model, the block its inputs' quantization runs in: a no-op for a plain model)."""
  if isinstance(model, QuantizedInputs):
    return model.model, model.block()
  return model, contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------- NNX

class _QuantizedInputLayer:
  """Mixed into an NNX layer's class by `quantize_nnx_inputs`: its input quantized before its own call."""

  def __call__(self, x, *args, **kwargs):
    aq = self.input_quantizer
    if aq.kind == "fixed_point":
      x = activations.round_to_fixed(x, aq.integer_bits, aq.fraction_bits)
    else:
      if self.input_calibrating:
        self.input_signed[...] = activations.initial_signed(x, aq.signed)
        self.input_step[...] = activations.lsq_initial_step(x, aq.bits, self.input_signed[...])
      x = activations.lsq(x, self.input_step[...], aq.bits, self.input_signed[...]).astype(x.dtype)
    return super().__call__(x, *args, **kwargs)


_NNX_CLASSES: dict[type, type] = {}


def quantize_nnx_inputs(model, rules: Sequence[Rule | str], aq: ActivationQuantizer, x, *args, **kwargs):
  """Quantizes, in place, the input of each layer of the NNX `model` whose kernel path a quantizing rule
  chooses (lsq or fixed_point): the layer keeps its path and gains an `nnx.Param` `input_step` and an
  `nnx.BatchStat` `input_signed`, both set by one call `model(x, *args, **kwargs)` on a first batch (LSQ's
  init). Returns `model`. A rule that matches no kernel layer is an error, as for Linen."""
  from flax import nnx  # NNX users only
  if aq.kind == "calibrated":
    raise ConfigError("quantize_nnx_inputs takes lsq or fixed_point; a calibrated running max needs a "
                      "train/eval switch NNX layers do not share. Use lsq.")
  match, chosen = RuleMatches(layer_choices(rules)), []
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Module) and path and isinstance(getattr(node, "kernel", None), nnx.Param):
      rule = match("/".join(map(str, path)) + KERNEL)
      if rule is not None and rule.quantizes:
        chosen.append(path)
  unused = match.unused()
  if unused:
    raise ConfigError(f"Activation rule(s) {unused} matched no kernel layer of the NNX model.")
  layers = []
  for path in chosen:  # each layer replaced in its parent by a copy of its quantizing subclass
    parent = functools.reduce(_child, path[:-1], model)
    node = _child(parent, path[-1])
    cls = type(node)
    if cls not in _NNX_CLASSES:
      _NNX_CLASSES[cls] = type(f"QuantizedInput{cls.__name__}", (_QuantizedInputLayer, cls), {})
    layer = object.__new__(_NNX_CLASSES[cls])
    vars(layer).update(vars(node))
    layer.input_quantizer, layer.input_calibrating = aq, aq.kind != "fixed_point"
    if aq.kind != "fixed_point":
      layer.input_step, layer.input_signed = nnx.Param(jnp.float32(1.0)), nnx.BatchStat(jnp.float32(0.0))
    if isinstance(path[-1], int):
      parent[path[-1]] = layer
    else:
      setattr(parent, path[-1], layer)
    layers.append(layer)
  if layers and aq.kind != "fixed_point":
    model(x, *args, **kwargs)
  for layer in layers:
    layer.input_calibrating = False
  return model


def _child(node, key):
  return node[key] if isinstance(key, int) else getattr(node, key)
