"""LiteRT export: every method and width stored as its integer levels (int4 or int8) and scales, read back
through the interpreter; logits against the plain path; a trained run through export.py and evaluate.py."""
import functools
import os
import sys
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_runtime_agrees_with_plain, load_config, random_variables, run_tool
from s3jax import quant
from s3jax.deploy import inference, litert, runtimes
from s3jax.deploy.export_format import is_quantized, load, write_export
from s3jax.errors import ConfigError
from s3jax.quant.conversion import batchnorm_after
from s3jax.quant.interface import is_latent
from s3jax.quant.tree import path_name
from s3jax.training.loop import train_and_evaluate

pytest.importorskip("litert_converter", reason="the LiteRT extra: pip install --no-deps -r requirements-litert.txt")
SPEC = {"shape": [8, 8, 1], "mean": [0.0], "std": [1.0], "pixels": "test"}


def _export(tmp_path, method, bits, scale="none", name="resnet8", shape=(8, 8, 1), negative_gammas=False):
  """`name` with random latents of `method` (its default kernels), written as an export and loaded back.
  Its BatchNorms as after training: a factor of their own per channel (of either sign: `negative_gammas`)."""
  params, batch_stats = random_variables(name, shape, quant.quantizer(method, bits, scale=scale))
  rng = np.random.default_rng(bits)
  randomized = lambda x: x if is_latent(x) else jnp.asarray(rng.uniform(0.5, 2.0, x.shape), x.dtype)
  params = jax.tree.map(randomized, params, is_leaf=is_latent)
  batch_stats = jax.tree.map(randomized, batch_stats)
  if negative_gammas:
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x * rng.choice([-1, 1], x.shape) if jax.tree_util.keystr(p).endswith("['scale']") else x,
        params, is_leaf=is_latent)
  spec = {**SPEC, "shape": list(shape), "mean": [0.0] * shape[-1], "std": [1.0] * shape[-1]}
  write_export(params, batch_stats, str(tmp_path), model=name, num_classes=10, input_spec=spec, step=0)
  return load(str(tmp_path))


def _interpreter(path):
  interpreter = runtimes.interpreter_class()(model_path=path)
  interpreter.allocate_tensors()
  return interpreter


def _expected_levels(export):
  """{layer: (integers as TFLite lays them out: output channel first, per-channel scales)} from the export:
  level / the method's smallest magnitude; that unit times the kernel's scale and the BatchNorm after it
  (gamma / sqrt(var + eps)), which the converter folds into the quantized conv, in float64."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(export.params, is_leaf=is_quantized)[0]:
    if is_quantized(leaf):
      name = path_name(path)
      unit = leaf.quantizer.magnitudes()[0]
      ints = np.asarray(leaf.quantizer.decode(leaf.codes)) / unit
      factor = 1.0 if leaf.scale is None else np.asarray(leaf.scale_factor(), np.float64)
      bn = batchnorm_after(name).split("/")
      gamma = np.asarray(functools.reduce(dict.get, bn, export.params)["scale"], np.float64)
      var = np.asarray(functools.reduce(dict.get, bn, export.batch_stats)["var"], np.float64)
      out[name] = (np.moveaxis(ints, -1, 0).astype(np.int8), unit * factor * gamma / np.sqrt(var + 1e-5))
  return out


@pytest.mark.slow
@pytest.mark.parametrize("method,bits,scale,dtype", [
    ("s3", 2, "none", "i4"), ("s3", 3, "none", "i4"), ("s3", 4, "learned", "i8"), ("denseshift", 2, "none", "i4"),
    ("denseshift", 3, "fixed", "i8"), ("deepshift_q", 2, "none", "i4"), ("deepshift_q", 3, "none", "i8"),
    ("deepshift_ps", 2, "none", "i4"), ("deepshift_ps", 3, "learned", "i4"), ("deepshift_ps", 4, "none", "i8")])
def test_litert_holds_the_levels_as_integers_and_computes_the_plain_logits(method, bits, scale, dtype, tmp_path):
  export = _export(tmp_path, method, bits, scale)
  path = litert.export_litert(export, "float", 4)
  assert export.manifest["litert"]["float_b4"]["weight_types"] == [dtype]
  interpreter = _interpreter(path)
  ops = {op["op_name"] for op in interpreter._get_ops_details()}
  assert "STABLEHLO_COMPOSITE" not in ops and "CONV_2D" in ops
  stored = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8]
  expected = _expected_levels(export)
  assert len(stored) == len(expected) == 8  # ResNet-8: 3 stages of 2 convs, and 2 downsample convs
  for ints, scales in expected.values():  # each kernel's integers, exactly, in one tensor, and its scales
    hits = [t for t in stored if np.array_equal(interpreter.get_tensor(t["index"]), ints)]
    assert len(hits) == 1, (method, bits, ints.shape)
    # The converter folds the BatchNorm in float32: within two roundings (2**-23 relative) of the float64 product.
    np.testing.assert_allclose(hits[0]["quantization_parameters"]["scales"], scales, rtol=2**-22, atol=0)
  images = jax.random.normal(jax.random.key(2), (10, 8, 8, 1))  # 10: two batches of 4, the last padded
  reference = np.asarray(inference.plain_apply(export)(images))
  got = np.asarray(litert.litert_apply(str(tmp_path), "float")(images))
  np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


@pytest.mark.slow
@pytest.mark.parametrize("name,shape,layer_op", [
    ("resnet1d_8", (8, 3), "CONV_2D"), ("vit_tiny", (14, 14, 1), "FULLY_CONNECTED"),
    ("mlp_tiny", (6, 6, 1), "FULLY_CONNECTED")])
def test_1d_resnets_the_vit_and_the_mlp_convert_with_integer_weights_and_the_plain_logits(name, shape, layer_op,
                                                                                          tmp_path):
  """1-D convs run as 2-D ones over a unit height (TFLite has none); the ViT's attention projections
  (DenseGeneral over heads) and MLP kernels, and the MLP's Dense kernels, as int4 tensors."""
  export = _export(tmp_path, "s3", 3, name=name, shape=shape)
  path = litert.export_litert(export, "float", 2)
  interpreter = _interpreter(path)
  ops = {op["op_name"] for op in interpreter._get_ops_details()}
  assert "STABLEHLO_COMPOSITE" not in ops and layer_op in ops, ops
  kernels = [leaf for leaf in jax.tree.leaves(export.params, is_leaf=is_quantized) if is_quantized(leaf)]
  stored = [interpreter.get_tensor(t["index"]) for t in interpreter.get_tensor_details() if t["dtype"] == np.int8]
  assert len(stored) == len(kernels) > 0
  assert sorted(sorted(np.unique(np.asarray(k.unscaled())).tolist()) for k in kernels) == sorted(
      sorted(np.unique(t).astype(float).tolist()) for t in stored)  # S3's unit is 1: the levels themselves
  images = jax.random.normal(jax.random.key(2), (3, *shape))
  reference = np.asarray(inference.plain_apply(export)(images))
  got = np.asarray(litert.litert_apply(str(tmp_path), "float")(images))
  np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_levels_beyond_int8_and_unknown_modes_are_one_line_errors(tmp_path, monkeypatch):
  export = _export(tmp_path, "s3", 5)
  with pytest.raises(ConfigError, match=r"^stage1_block0/conv1/kernel: s3 5b levels reach 16384 times 1.0, beyond int8.s 127"):
    litert.lowbit_function(export, "float")
  with pytest.raises(ConfigError, match="--litert='int3' is unknown"):
    litert.check_modes(["int3"], [1])
  with pytest.raises(ConfigError, match="must list batch sizes >= 1"):
    litert.check_modes(["float"], [0])
  monkeypatch.setitem(sys.modules, "litert_converter", None)  # as where the extra is not installed
  with pytest.raises(ConfigError, match=r"needs the litert extra .*pip install --no-deps -r requirements-litert"):
    litert.check_modes(["float"], [1])


@pytest.mark.slow
def test_a_trained_run_exports_to_litert_and_evaluates_like_the_plain_path(tmp_path):
  """export.py --litert, then evaluate.py --path=litert --litert_mode=dynamic_int8: its top-1 classes agree
  with the plain path's on at least 97% of the test split (12 steps leave small margins: 98.9% measured;
  the 20-epoch demo agrees on 99.8%). The float file, evaluated as evaluate.py does (the same function),
  gives the plain path's logits and top-1."""
  workdir, output = str(tmp_path / "run"), str(tmp_path / "export")
  config = load_config("digits", total_steps=12, eval_every_steps=12, log_every_steps=6)
  train_and_evaluate(config, workdir)
  lines = run_tool("export.py", f"--workdir={workdir}", f"--output={output}", "--nostablehlo",
                   "--litert=float,dynamic_int8", "--litert_batch=1,50")
  assert sum(line.startswith("LiteRT ") and line.endswith("weights as i4") for line in lines) == 4
  dataset = assert_runtime_agrees_with_plain(config, output, "litert")
  export = load(output)
  images = np.concatenate([b["image"] for b in dataset.eval_batches()])
  reference = np.asarray(inference.plain_apply(export)(images))
  got = np.asarray(litert.litert_apply(output, "float")(images))
  np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


@pytest.mark.slow
@pytest.mark.parametrize("bits,dtype,most", [(3, "i4", 1 / 6), (4, "i8", 1 / 3.5)])
def test_the_lowbit_file_is_a_fraction_of_the_float32_one(bits, dtype, most, tmp_path):
  """On ResNet-20 (the demo's network), against the same weights as float32 constants: 1/6.38 (int4) and
  1/3.60 (int8) measured. ResNet-8's float stem, head and BatchNorms weigh more: 1/5.56 and 1/3.36 there."""
  export = _export(tmp_path, "s3", bits, name="resnet20")
  path = litert.export_litert(export, "float", 1)
  assert export.manifest["litert"]["float_b1"]["weight_types"] == [dtype]
  float32 = litert.convert(litert.lowbit_function(export, "float", lowbit=False)[0], export.input_shape, 1, False)
  assert os.path.getsize(path) <= most * len(float32), (os.path.getsize(path), len(float32))


def test_full_int8_folds_the_batchnorm_after_a_dense_into_its_integers_and_scale(tmp_path):
  """LiteRT's converter folds a BatchNorm into a conv only: the MLP's first Dense (its output goes into the
  second's 8-bit grid) runs as an int8 FULLY_CONNECTED only with its BatchNorm folded at export, the
  integers negated where gamma < 0 and the scale unit * |gamma| / sqrt(var + eps), as numpy computes it."""
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
  from benchlib import activation_export
  export = _export(tmp_path / "weights", "s3", 3, name="mlp_tiny", shape=(6, 6, 1), negative_gammas=True)
  full = load(activation_export(export, str(tmp_path / "full"), "mlp_tiny"))
  path = litert.export_litert(full, "full_int8", 4)
  interpreter = _interpreter(path)
  details = {t["index"]: t for t in interpreter.get_tensor_details()}
  fcs = [op for op in interpreter._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
  int8 = [op for op in fcs if all(details[i]["dtype"] == np.int8 for i in (*op["inputs"][:2], op["outputs"][0]))]
  assert len(int8) == 1 and len(fcs) == 3, fcs       # dense1; dense2 feeds the float head, which is float
  weight = details[int8[0]["inputs"][1]]
  gamma = np.asarray(full.params["bn1"]["scale"], np.float64)
  assert np.any(gamma < 0) and np.any(gamma > 0)
  a = gamma / np.sqrt(np.asarray(full.batch_stats["bn1"]["var"], np.float64) + 1e-5)
  levels = np.asarray(full.params["dense1"]["kernel"].unscaled())                    # S3's unit is 1
  np.testing.assert_array_equal(interpreter.get_tensor(weight["index"]), (levels * np.sign(a)).T.astype(np.int8))
  np.testing.assert_allclose(weight["quantization_parameters"]["scales"], np.abs(a), rtol=1e-6)
  images = jax.random.normal(jax.random.key(2), (4, 6, 6, 1))
  reference = np.asarray(inference.plain_apply(full)(images))
  folded = np.asarray(jax.jit(litert.lowbit_function(full, "full_int8")[0])(images))   # the graph converted
  np.testing.assert_allclose(folded, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
  # LiteRT's int8 arithmetic (an int32 bias on the input-times-weight scale, fixed-point requantization
  # multipliers) moves these random-weight logits by 0.3% of their largest.
  got = np.asarray(litert.litert_apply(str(tmp_path / "full"), "full_int8")(images))
  np.testing.assert_allclose(got, reference, atol=1e-2 * np.abs(reference).max())
