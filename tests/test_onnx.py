"""ONNX export: every method and width, Dense kernels with 4-bit levels as MatMulNBits holding exactly the
export's weights; logits against the plain path; a trained run through export.py and evaluate.py."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import (assert_runtime_agrees_with_plain, load_config, random_variables, run_doc_example,
                     run_tool)
from s3jax import quant
from s3jax.deploy import inference, onnx_export
from s3jax.deploy.export_format import is_quantized, load, write_export
from s3jax.errors import ConfigError
from s3jax.quant.interface import is_latent
from s3jax.quant.tree import path_name
from s3jax.training.loop import train_and_evaluate

onnx = pytest.importorskip("onnx", reason="the ONNX extra: pip install --no-deps -r requirements-onnx.txt")
from onnx import helper, numpy_helper  # noqa: E402

SPEC = {"shape": [6, 6, 1], "mean": [0.0], "std": [1.0], "pixels": "test"}  # 36 inputs: a padded block


def _export(tmp_path, method, bits, scale="none"):
  """mlp_tiny (36-64-48-10) with random latents of `method` in both hidden Dense layers, written and loaded."""
  params, batch_stats = random_variables("mlp_tiny", SPEC["shape"], quant.quantizer(method, bits, scale=scale))
  rng = np.random.default_rng(bits)  # BatchNorms as after training
  randomized = lambda x: x if is_latent(x) else jnp.asarray(rng.uniform(0.5, 2.0, x.shape), x.dtype)
  params = jax.tree.map(randomized, params, is_leaf=is_latent)
  write_export(params, jax.tree.map(randomized, batch_stats), str(tmp_path), model="mlp_tiny", num_classes=10,
               input_spec=SPEC, step=0)
  return load(str(tmp_path))


def _dequantized(model, node) -> np.ndarray:
  """The (K, N) float kernel a MatMulNBits node computes with, unpacked here from its bytes (low nibble
  first, zero point 8) by the ONNX Runtime contrib-op spec, independently of the writer."""
  init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
  attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
  packed, scales = init[node.input[1]], init[node.input[2]]
  n, blocks, _ = packed.shape
  q = np.stack([packed & 15, packed >> 4], -1).reshape(n, blocks * attrs["block_size"])[:, :attrs["K"]]
  return ((q.astype(np.float64) - 8) * scales.reshape(n, blocks)[:, :1]).T


@pytest.mark.parametrize("method,bits,scale,nbits", [
    ("s3", 2, "none", True), ("s3", 3, "learned", True), ("s3", 4, "none", False), ("denseshift", 2, "fixed", True),
    ("denseshift", 3, "none", False), ("deepshift_q", 2, "none", True), ("deepshift_q", 3, "none", False),
    ("deepshift_ps", 3, "none", True), ("deepshift_ps", 4, "learned", False)])
def test_onnx_holds_the_4bit_levels_in_matmul_nbits_and_computes_the_plain_logits(method, bits, scale, nbits,
                                                                                  tmp_path):
  export = _export(tmp_path, method, bits, scale)
  path = onnx_export.export_onnx(export)
  model = onnx.load(path)
  nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
  kernels = {path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(
      export.params, is_leaf=is_quantized)[0] if is_quantized(leaf)}
  assert sorted(kernels) == ["dense1/kernel", "dense2/kernel"]
  assert export.manifest["onnx"]["matmul_nbits"] == (sorted(kernels) if nbits else [])
  assert len(nodes) == (2 if nbits else 0)
  for node in nodes:  # each holds exactly its kernel's weights (levels times scale)
    weights = np.asarray(kernels[node.name.split(":")[0]].weights(), np.float64)
    np.testing.assert_array_equal(_dequantized(model, node).astype(np.float32), weights.astype(np.float32))
  images = jax.random.normal(jax.random.key(2), (7, *SPEC["shape"]))
  reference = np.asarray(inference.plain_apply(export)(images))
  got = np.asarray(onnx_export.onnx_apply(str(tmp_path), "float")(images))
  np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
  fast = np.asarray(onnx_export.onnx_apply(str(tmp_path), "dynamic_int8")(images))
  np.testing.assert_allclose(fast, reference, rtol=0.1, atol=0.1 * np.abs(reference).max())


def test_missing_extra_and_missing_file_are_one_line_errors(tmp_path, monkeypatch):
  export = _export(tmp_path, "s3", 3)
  from s3jax.deploy.manifest import ExportError
  with pytest.raises(ExportError, match="has no model.onnx: export with --onnx"):
    onnx_export.onnx_apply(export.directory)
  onnx_export.export_onnx(export)
  with pytest.raises(ConfigError, match="ONNX mode 'int4' is unknown"):
    onnx_export.onnx_apply(export.directory, "int4")
  with pytest.raises(ConfigError, match="ONNX Runtime refuses the graph jax2onnx"):
    onnx_export.checked_session(b"not an ONNX graph", "float")
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # as where the extra is not installed
  with pytest.raises(ConfigError, match=r"needs the onnx extra .*pip install --no-deps -r requirements-onnx"):
    onnx_export.check_installed()


@pytest.mark.slow
def test_a_trained_mlp_exports_to_onnx_and_evaluates_like_the_plain_path(tmp_path):
  """export.py --onnx, then evaluate.py --path=onnx (int8 activations) on a 12-step S3 mlp_tiny over the
  digits: its top-1 classes agree with the plain path's on at least 97%; float compute, evaluated as
  evaluate.py does (the same function), on every one."""
  workdir, output = str(tmp_path / "run"), str(tmp_path / "export")
  config = load_config("digits", model="mlp_tiny", total_steps=12, eval_every_steps=12, log_every_steps=6)
  train_and_evaluate(config, workdir)
  lines = run_tool("export.py", f"--workdir={workdir}", f"--output={output}", "--nostablehlo", "--onnx")
  assert any(line.startswith("ONNX: model.onnx") and "2 Dense kernels as 4-bit MatMulNBits" in line
             for line in lines), lines
  assert_runtime_agrees_with_plain(config, output, "onnx")
  lines, _ = run_doc_example("export-onnx", {"/tmp/s3_mlp_export": output})  # docs/export.md, on this export
  assert lines == ["float32 (4, 10)"]
