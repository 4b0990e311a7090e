"""export.py and evaluate.py on a real short run: packed codes, the three inference paths, corrupted files."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import REPO, cli_env, load_config, printed_as_commented, doc_examples, random_variables, run_doc_example
from s3jax import quant
from s3jax.deploy.from_workdir import checkpoint_apply, restore_variables
from s3jax.deploy.export_format import ExportError, load, pack_indices, unpack_indices, write_export
from s3jax.deploy.inference import evaluate_apply, plain_apply, shift_add_apply
from s3jax.data import create_dataset
from s3jax.models import create_model
from s3jax.quant.tree import latents_with_paths, path_name
from s3jax.records.eval_program import jit_eval_logits
from s3jax.records.workdir_files import read_config, read_metrics
from s3jax.training.loop import train_and_evaluate


def _run(script, *args, timeout=300):
  return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=REPO, env=cli_env(1),
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A 3-bit S3 digits run (12 steps) and its export, written by the real export.py."""
  root = tmp_path_factory.mktemp("export")
  workdir, output = str(root / "run"), str(root / "export")
  config = load_config("digits", total_steps=12, eval_every_steps=12, log_every_steps=6)
  train_and_evaluate(config, workdir)
  result = _run("export.py", f"--workdir={workdir}", f"--output={output}")
  assert result.returncode == 0, result.stderr[-2000:]
  return workdir, output, result.stdout


@pytest.mark.slow
def test_export_and_evaluate_run_on_another_device_count(exported, tmp_path):
  """Trained on 8 devices at batch 64; exported and evaluated on 3, which do not divide 64."""
  workdir, _, _ = exported
  trained = [r for r in read_metrics(workdir) if "eval/top1" in r][-1]
  output = str(tmp_path / "on3")

  def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=REPO, env=cli_env(3),
                          capture_output=True, text=True, timeout=300)

  result = run("export.py", f"--workdir={workdir}", f"--output={output}", "--nostablehlo")
  assert result.returncode == 0, result.stderr[-2000:]
  for source in (f"--workdir={workdir}", f"--export={output}"):
    result = run("evaluate.py", source)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"final eval/top1 = {trained['eval/top1']:.4f}" in result.stdout, (source, result.stdout)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5])
def test_packing_matches_the_documented_bit_stream(width):
  """Weight i's index in bits [i*w, (i+1)*w), least-significant first: the stream as one Python integer."""
  rng = np.random.default_rng(width)
  for count in (1, 7, 8, 13, 1000):
    indices = rng.integers(0, 2 ** width, size=count).astype(np.uint8)
    stream = sum(int(v) << (i * width) for i, v in enumerate(indices))
    expected = stream.to_bytes((count * width + 7) // 8, "little")
    assert pack_indices(indices, width) == expected
    np.testing.assert_array_equal(unpack_indices(expected, count, width), indices)
  with pytest.raises(ValueError, match="does not fit"):
    pack_indices(np.array([2 ** width]), width)


@pytest.mark.slow
def test_export_has_the_checkpoints_codes_and_sizes(exported):
  workdir, output, stdout = exported
  config = read_config(workdir)
  _, variables, step, _ = restore_variables(config, workdir)
  params = variables["params"]
  loaded = load(output)
  assert loaded.manifest["step"] == step == 12
  saved = dict(latents_with_paths(params))
  assert len(saved) == 8  # 6 stage convs of ResNet-8 and its two 1x1 downsample convs
  flat = {k: v for k, v in jax.tree_util.tree_flatten_with_path(
      loaded.params, is_leaf=lambda x: hasattr(x, "codes"))[0]}
  codes = {path_name(p): x.codes for p, x in flat.items() if hasattr(x, "codes")}
  assert codes.keys() == saved.keys()
  for path, latent in saved.items():
    np.testing.assert_array_equal(codes[path], np.asarray(quant.to_codes(latent)), err_msg=path)
  manifest = loaded.manifest
  entry = manifest["arrays"]["params/stage1_block0/conv1/kernel"]
  assert entry["bits_per_weight"] == 3 and entry["bytes"] == (3 * 3 * 16 * 16 * 3 + 7) // 8
  weights = sum(int(np.prod(x.shape)) for x in saved.values())
  assert manifest["sizes"]["quantized_weights"] == weights
  assert abs(manifest["sizes"]["quantized_ratio"] - 32 / 3) < 0.01  # 3 bits per weight, no scales
  assert f"{weights:,} weights" in stdout and "ratio" in stdout
  assert manifest["levels"] == [-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0]


@pytest.mark.slow
def test_three_inference_paths_against_the_trainer(exported):
  """Plain path: bit-identical to the trainer's eval logits. Multiplication-free: within float rounding,
  same predictions on the whole eval split. StableHLO in a process without s3jax: equal logits."""
  workdir, output, _ = exported
  config = read_config(workdir)
  dataset = create_dataset(config)
  trainer_apply, _, _ = checkpoint_apply(config, workdir)
  loaded = load(output)
  plain, shift_add = plain_apply(loaded), shift_add_apply(loaded)
  images = np.concatenate([b["image"] for b in dataset.eval_batches()])[:dataset.num_test]
  reference = np.asarray(trainer_apply(images))
  np.testing.assert_array_equal(np.asarray(plain(images)), reference)
  free = np.asarray(shift_add(images))
  np.testing.assert_allclose(free, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
  np.testing.assert_array_equal(free.argmax(-1), reference.argmax(-1))

  # The trainer's own last eval (metrics.jsonl) and evaluate's, from the checkpoint and from the export.
  trainer_eval = [r for r in read_metrics(workdir) if "eval/top1" in r][-1]
  from_export, predictions = evaluate_apply(plain, dataset)
  assert from_export["eval/top1"] == trainer_eval["eval/top1"]
  np.testing.assert_allclose(from_export["eval/loss"], trainer_eval["eval/loss"], rtol=1e-5)
  np.testing.assert_array_equal(predictions, reference.argmax(-1))
  np.save(os.path.join(output, "..", "images.npy"), images)
  script = (
      "import sys; sys.modules['s3jax'] = None\n"  # any import of s3jax now fails
      "import numpy as np, jax\n"
      f"blob = bytearray(open({os.path.join(output, 'model.stablehlo')!r}, 'rb').read())\n"
      "exported = jax.export.deserialize(blob)\n"
      # One file for all three platforms; no source paths (its bytes depend on the program only); decoded
      # once at export: no int8 codes left to decode at every call.
      "assert exported.platforms == ('cpu', 'cuda', 'tpu') and '.py' not in (text := exported.mlir_module())\n"
      "assert 'xi8>' not in text\nrun = jax.jit(exported.call)\n"
      f"x = np.load({os.path.join(output, '..', 'images.npy')!r})\n"
      f"np.save({os.path.join(output, '..', 'logits.npy')!r}, np.asarray(run(x)))\n"
      "assert not any(m.startswith('s3jax') for m in sys.modules if sys.modules[m] is not None)\n")
  result = subprocess.run([sys.executable, "-c", script], env=cli_env(1, compiled_as_here=True), capture_output=True,
                          text=True, timeout=120, cwd="/")
  assert result.returncode == 0, result.stderr[-2000:]
  np.testing.assert_array_equal(np.load(os.path.join(output, "..", "logits.npy")), reference)


@pytest.mark.slow
def test_evaluate_cli_on_checkpoint_and_export(exported):
  workdir, output, _ = exported
  trainer_eval = [r for r in read_metrics(workdir) if "eval/top1" in r][-1]
  lines = []
  for args in ([f"--workdir={workdir}"], [f"--export={output}", "--path=shift_add"]):
    result = _run("evaluate.py", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    lines.append(result.stdout.strip().splitlines()[-1])
  assert lines[0].startswith(f"final eval/top1 = {trainer_eval['eval/top1']:.4f}  eval/top5 = ")
  assert lines[1].split("eval/loss")[0] == lines[0].split("eval/loss")[0]


def _one_line_error(result, *fragments):
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  error = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(error) == 1, result.stderr[-2000:]
  for fragment in fragments:
    assert fragment in error[0], error[0]


@pytest.mark.slow
def test_corrupted_exports_are_refused_in_one_line(exported, tmp_path):
  _, output, _ = exported
  cases = {}
  for name, damage in {
      "truncated": lambda d: _truncate(os.path.join(d, "params/stage2_block0/conv2/kernel.codes")),
      "edited": lambda d: _flip_byte(os.path.join(d, "batch_stats/stem_bn/mean.npy")),
      "missing": lambda d: os.remove(os.path.join(d, "params/head/kernel.npy")),
      "version": lambda d: _edit_manifest(d, version=2),
      "manifest": lambda d: _truncate(os.path.join(d, "manifest.json")),
  }.items():
    copy = str(tmp_path / name)
    shutil.copytree(output, copy)
    damage(copy)
    cases[name] = copy
  expected = {"truncated": "stage2_block0/conv2/kernel.codes does not match the checksum",
              "edited": "stem_bn/mean.npy does not match the checksum",
              "missing": "head/kernel.npy is missing", "version": "format version 2",
              "manifest": "manifest.json is not valid JSON"}
  for name, copy in cases.items():
    with pytest.raises(ExportError, match=None) as err:
      load(copy)
    assert expected[name] in str(err.value) and "\n" not in str(err.value), (name, err.value)
  _one_line_error(_run("evaluate.py", f"--export={cases['truncated']}"), "kernel.codes")
  _one_line_error(_run("export.py", f"--workdir={tmp_path}", f"--output={tmp_path / 'x'}"), "config.json")


def _truncate(path):
  with open(path, "rb+") as f:
    f.truncate(os.path.getsize(path) // 2)


def _flip_byte(path):
  data = bytearray(open(path, "rb").read())
  data[-1] ^= 0xFF
  open(path, "wb").write(bytes(data))


def _edit_manifest(directory, **changes):
  path = os.path.join(directory, "manifest.json")
  manifest = json.load(open(path))
  manifest.update(changes)
  json.dump(manifest, open(path, "w"))


@pytest.mark.slow
@pytest.mark.parametrize("method,scale", [("deepshift_q", "learned"), ("denseshift", "fixed")])
def test_other_methods_round_trip_and_run_without_multiplications(method, scale, tmp_path):
  """Random latents of another method, with a scale, on ResNet-8: codes, decoded kernels and both paths.
  DeepShift-Q with exact zeros also needs the 4-bit layer and the 8-level tables without 0."""
  model = create_model("resnet8", 10)
  params, batch_stats = random_variables("resnet8", (8, 8, 1), quant.quantizer(method, 3, scale=scale))
  if method == "deepshift_q":  # exact zeros next to all eight signed powers of two need a 4th bit
    path = ["stage1_block0", "conv1", "kernel"]
    scaled = params[path[0]][path[1]][path[2]]
    latent = dataclasses.replace(scaled.latent, weight=scaled.latent.weight.at[0, 0, 0, :3].set(0.0))
    params[path[0]][path[1]][path[2]] = dataclasses.replace(scaled, latent=latent)
  spec = {"shape": [8, 8, 1], "mean": [0.0], "std": [1.0], "pixels": "test"}
  manifest = write_export(params, batch_stats, str(tmp_path), model="resnet8", num_classes=10,
                          input_spec=spec, step=0)
  loaded = load(str(tmp_path))
  widths = {e["bits_per_weight"] for e in manifest["arrays"].values() if e["kind"] == "codes"}
  assert widths == ({3, 4} if method == "deepshift_q" else {3})
  for (path, kernel) in latents_with_paths(params):
    node = loaded.params
    for part in path.split("/"):
      node = node[part]
    np.testing.assert_array_equal(node.weights(), quant.materialize(kernel), err_msg=path)
  images = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
  # The trainer's evaluation program, on the trained latents; the plain path runs it on rebuilt ones.
  reference = jit_eval_logits(model)({"params": params, "batch_stats": batch_stats}, images)
  np.testing.assert_array_equal(plain_apply(loaded)(images), reference)
  np.testing.assert_allclose(shift_add_apply(loaded)(images), reference, rtol=1e-4,
                             atol=1e-4 * float(jnp.abs(reference).max()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["export-load", "export-stablehlo"])
def test_export_page_examples_run_on_a_real_export(exported, name):
  """docs/export.md's examples, on this run's export (8x8 digits, 10 classes) instead of the demo's."""
  lines, _ = run_doc_example(name, {"/tmp/s3_mnist_export": exported[1]})
  assert lines == printed_as_commented(doc_examples()[name][1])
