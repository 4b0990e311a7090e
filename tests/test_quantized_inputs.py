"""Quantized layer inputs on a user's own Linen and NNX models: exactly the layers the rules choose, against
forwards written by hand with numpy forms of the quantizers (tests/test_activation_quant.py)."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s3jax.errors import ConfigError
from s3jax.models.quantized_inputs import (QuantizedInputs, activation_layers, calibrated_variables,
                                           quantized_inputs)
from s3jax.quant import FULL_PRECISION, Rule, quantizer
from s3jax.quant import activations as aq
from test_activation_quant import _activations, np_lsq, np_round_to_fixed


def _mlp_and_batch():
  model = nn.Sequential([nn.Dense(6), nn.relu, nn.Dense(5), nn.relu, nn.Dense(3)])
  return model, jnp.asarray(_activations(9, shape=(8, 4)))


def _dense(p, h):
  return h @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def test_the_interceptor_quantizes_exactly_the_inputs_of_the_layers_the_rules_choose():
  model, x = _mlp_and_batch()
  params = model.init(jax.random.key(0), x)["params"]
  rules = [Rule("layers_0/kernel", FULL_PRECISION), Rule(r"layers_\d/kernel", quantizer("s3", 3))]
  lsq4 = aq.ActivationQuantizer("lsq", bits=4)
  with quantized_inputs(rules, lsq4) as chosen:
    variables = model.init(jax.random.key(0), x)
  assert chosen == ["layers_2", "layers_4"]
  assert activation_layers(QuantizedInputs(model, tuple(rules), lsq4), variables, x) == ("layers_2", "layers_4")
  assert sorted(variables["params"]["layers_2"]) == ["bias", "input_step", "kernel"]
  assert "input_step" not in variables["params"]["layers_0"]
  assert float(variables["batch_stats"]["layers_2"]["input_signed"]) == 0.0      # after a ReLU

  # A forward by hand: LSQ's init from the batch each layer saw, then its grid (numpy).
  p = {k: v for k, v in variables["params"].items()}
  h1 = np.maximum(_dense(p["layers_0"], np.asarray(x, np.float64)), 0)
  s2 = 2 * np.mean(np.abs(h1)) / math.sqrt(15)
  np.testing.assert_allclose(float(p["layers_2"]["input_step"]), s2, rtol=1e-5)
  h2 = np.maximum(_dense(p["layers_2"], np_lsq(h1, s2, 0, 15, h1)[0]), 0)
  s4 = float(p["layers_4"]["input_step"])
  want = _dense(p["layers_4"], np_lsq(h2, s4, 0, 15, h2)[0])
  with quantized_inputs(rules, lsq4):
    got = model.apply(variables, x)
  wrapped = QuantizedInputs(model, tuple(rules), lsq4)                 # the same, built in
  shapes_only = wrapped.init(jax.random.key(0), jnp.zeros_like(x))
  assert float(shapes_only["params"]["layers_2"]["input_step"]) == 1.0    # no data: calibrate it
  calibrated = calibrated_variables(wrapped, shapes_only, x)
  assert jax.tree_util.tree_all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), calibrated, variables))
  np.testing.assert_array_equal(np.asarray(wrapped.apply(variables, x)), np.asarray(got))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
  assert not np.allclose(np.asarray(model.apply({"params": params}, x)), want, atol=1e-3)

  def loss(params):
    with quantized_inputs(rules, lsq4):
      return jnp.sum(model.apply({**variables, "params": params}, x) ** 2)
  grads = jax.grad(loss)(variables["params"])
  assert float(jnp.abs(grads["layers_2"]["input_step"])) > 0


def test_a_rule_or_a_layer_that_quantizes_nothing_is_an_error():
  model, x = _mlp_and_batch()
  params = model.init(jax.random.key(0), x)["params"]
  with pytest.raises(ConfigError, match=r"Activation rule\(s\) \['conv.\*/kernel'\] matched no kernel"):
    activation_layers(QuantizedInputs(model, (Rule("conv.*/kernel", quantizer("s3", 3)),),
                                      aq.ActivationQuantizer("fixed_point")), {"params": params}, x)
  with pytest.raises(ConfigError, match=r"Activation rule\(s\) \['layers_9/kernel'\] matched no kernel layer"):
    with quantized_inputs([Rule(r"layers_[29]/kernel", quantizer("s3", 3)), Rule("layers_9/kernel", quantizer("s3", 3))],
                          aq.ActivationQuantizer("fixed_point")):
      model.init(jax.random.key(0), x)


def test_integer_points_put_both_summands_of_a_residual_sum_and_the_block_input_on_grids():
  """A strided BasicBlock with LSQ 8-bit grids at its input (its first conv's and its shortcut's), its
  second conv's input and both summands, against a forward written with lax.conv and numpy's LSQ."""
  from s3jax.models import create_model, integer_activation_patterns, resnet
  lsq8 = aq.ActivationQuantizer("lsq", bits=8)
  net = QuantizedInputs(create_model("resnet8", 10), integer_activation_patterns("resnet8"), lsq8)
  images = jnp.asarray(_activations(12, shape=(2, 8, 8, 1)))
  assert activation_layers(net, net.init(jax.random.key(0), images, train=False), images, train=False) == tuple(
      f"stage{i}_block0/{p}" for i in (1, 2, 3) for p in ("input", "conv2", "branch") + (("shortcut",) * (i > 1)))

  conv = functools.partial(nn.Conv, use_bias=False)
  norm = functools.partial(resnet.BatchNorm, use_running_average=True)
  block = resnet.BasicBlock(6, conv, norm, strides=2)
  x = jnp.maximum(jnp.asarray(_activations(13, shape=(2, 6, 6, 4))), 0)      # a block input: after a ReLU
  rules = (r"(input|branch|shortcut)", "conv2/kernel")
  with quantized_inputs(rules, lsq8):
    variables = block.init(jax.random.key(1), x)
  rng = np.random.default_rng(14)                                   # BatchNorm statistics other than 0 and 1
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 0.3 * rng.random(v.shape, np.float32) if "bn" in jax.tree_util.keystr(path) else v,
      variables)
  with quantized_inputs(rules, lsq8) as chosen:
    got = block.apply(variables, x)
  assert chosen == ["input", "conv2", "branch", "shortcut"]
  p, s = variables["params"], variables["batch_stats"]

  def grid(h, name):
    signed = float(s[name]["input_signed"]) > 0
    return np_lsq(h, float(p[name]["input_step"]), 128 if signed else 0, 127 if signed else 255, h)[0]

  def conv_bn(h, name, bn, stride):
    k = np.asarray(p[name]["kernel"])
    pad = [(k.shape[0] // 2,) * 2] * 2
    h = np.asarray(jax.lax.conv_general_dilated(h.astype(np.float32), k, (stride, stride), pad,
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC")), np.float64)
    return (h - s[bn]["mean"]) / np.sqrt(s[bn]["var"] + 1e-5) * p[bn]["scale"] + p[bn]["bias"]

  xq = grid(np.asarray(x, np.float64), "input")
  h = grid(np.maximum(conv_bn(xq, "conv1", "bn1", 2), 0), "conv2")
  want = np.maximum(grid(conv_bn(h, "conv2", "bn2", 1), "branch")
                    + grid(conv_bn(xq, "downsample_conv", "downsample_bn", 2), "shortcut"), 0)
  assert float(s["input"]["input_signed"]) == 0 and float(s["branch"]["input_signed"]) == 1
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
  with quantized_inputs(("conv2/kernel",), lsq8):                   # without the points: another function
    assert not np.allclose(np.asarray(block.apply(variables, x)), want, atol=1e-3)


def test_calibrated_inputs_keep_a_running_max_in_batch_stats_and_fixed_point_keeps_nothing():
  model, x = _mlp_and_batch()
  cal = aq.ActivationQuantizer("calibrated", bits=8, momentum=0.5, signed="signed")
  with quantized_inputs([Rule("layers_0/kernel", quantizer("s3", 3))], cal):
    variables = model.init(jax.random.key(0), x)
    start = float(variables["batch_stats"]["layers_0"]["input_abs_max"])
    assert start == pytest.approx(float(jnp.max(jnp.abs(x))))
    _, updated = model.apply(variables, 2 * x, mutable=["batch_stats"])
    model.apply(variables, 2 * x)                                       # eval: nothing to update
  assert float(updated["batch_stats"]["layers_0"]["input_abs_max"]) == pytest.approx(0.5 * start + start)
  with quantized_inputs([Rule("layers_0/kernel", quantizer("s3", 3))],
                        aq.ActivationQuantizer("fixed_point", integer_bits=4, fraction_bits=1)):
    fixed = model.init(jax.random.key(0), x)
    got = model.apply(fixed, x)
  assert "batch_stats" not in fixed
  p = fixed["params"]
  h = np.maximum(_dense(p["layers_0"], np_round_to_fixed(np.asarray(x, np.float64), 4, 1)), 0)
  h = np.maximum(_dense(p["layers_2"], h), 0)
  np.testing.assert_allclose(np.asarray(got), _dense(p["layers_4"], h), rtol=1e-4, atol=1e-5)


def test_nnx_layers_quantize_their_inputs_in_place_with_their_paths_kept():
  import copy

  from flax import nnx

  from s3jax.models.quantized_inputs import quantize_nnx_inputs

  class CNN(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
      self.head = nnx.Linear(8, 10, rngs=rngs)

    def __call__(self, x):
      return self.head(nnx.relu(self.conv(x)).mean((1, 2)))

  model, x = CNN(nnx.Rngs(0)), jnp.asarray(_activations(10, shape=(16, 8, 8, 1)))
  plain = copy.deepcopy(model)
  rules = [Rule(r"(conv|head)/kernel", quantizer("s3", 3))]
  quantize_nnx_inputs(model, rules, aq.ActivationQuantizer("lsq", bits=4), x)
  # By hand: the conv's input is signed (Q_N 8, Q_P 7), the head's after a ReLU unsigned (0, 15), each
  # step LSQ's init from what the layer saw on that first call.
  s_conv = 2 * np.mean(np.abs(np.asarray(x))) / math.sqrt(7)
  h = np.asarray(nnx.relu(plain.conv(jnp.asarray(np_lsq(np.asarray(x), s_conv, 8, 7, x)[0], jnp.float32))).mean((1, 2)))
  s_head = 2 * np.mean(np.abs(h)) / math.sqrt(15)
  want = plain.head(jnp.asarray(np_lsq(h, s_head, 0, 15, h)[0], jnp.float32))
  np.testing.assert_allclose(float(model.conv.input_step[...]), s_conv, rtol=1e-5)
  np.testing.assert_allclose(float(model.head.input_step[...]), s_head, rtol=1e-4)
  assert float(model.conv.input_signed[...]) == 1.0 and float(model.head.input_signed[...]) == 0.0
  np.testing.assert_allclose(np.asarray(model(x)), np.asarray(want), rtol=1e-4, atol=1e-5)

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  assert sorted(nnx.to_pure_dict(params)["conv"]) == ["bias", "input_step", "kernel"]
  grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p, rest, copy=True)(x) ** 2))(params)
  assert float(jnp.abs(nnx.to_pure_dict(grads)["head"]["input_step"])) > 0
  with pytest.raises(ConfigError, match=r"Activation rule\(s\) \['dense/kernel'\] matched no kernel layer"):
    quantize_nnx_inputs(CNN(nnx.Rngs(0)), ["dense/kernel"], aq.ActivationQuantizer("lsq"), x)
  with pytest.raises(ConfigError, match="quantize_nnx_inputs takes lsq or fixed_point"):
    quantize_nnx_inputs(CNN(nnx.Rngs(0)), ["conv/kernel"], aq.ActivationQuantizer("calibrated"), x)


def test_integer_points_are_the_models_own_and_part_of_a_checkpoints_identity():
  from helpers import load_config
  from s3jax.models import resnet
  from s3jax.records.resolved import resolve_run
  lsq = {"quant.activations": "lsq", "quant.activation_points": "integer"}
  run = resolve_run(load_config("digits", **lsq))
  assert run.activation_rules == resnet.INTEGER_ACTIVATION_PATTERNS
  assert run.identity["activations"] == {"kind": "lsq", "bits": 8, "signed": "auto", "points": "integer"}
  assert resolve_run(load_config("digits", **{"quant.activations": "lsq"})).identity["activations"] == {
      "kind": "lsq", "bits": 8, "signed": "auto"}                     # as before points existed: resumable
  for overrides, message in (({"quant.activation_points": "all"}, "quant.activation_points='all' is unknown"),
                             ({"quant.activation_rules": ("head/kernel",)}, "leave quant.activation_rules empty"),
                             ({"model": "vit_tiny"}, "'integer' is not defined for model='vit_tiny'")):
    with pytest.raises(ConfigError, match=message):
      resolve_run(load_config("digits", **{**lsq, **overrides}))
