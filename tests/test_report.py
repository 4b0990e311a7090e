"""Weight dynamics against numpy on saved checkpoints, and report.py on real short runs."""
import csv
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from helpers import REPO, load_config, restore_checkpoint
from s3jax.records.workdir_files import mark_in_progress, read_metrics
from s3jax.training.loop import train_and_evaluate

QUANTIZED = 76_288  # weights in configs/digits.py's quantized convs (ResNet-8)


pytestmark = pytest.mark.slow  # runs the trainer, a CLI or several processes


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An S3 and a full-precision digits run, each with a checkpoint at every eval (steps 4 and 8)."""
  root = tmp_path_factory.mktemp("runs")
  for method in ("s3", "float"):
    config = load_config("digits", batch_size=64, total_steps=8, eval_every_steps=4, log_every_steps=2,
                         checkpoint_every_steps=4, **{"quant.method": method})
    train_and_evaluate(config, str(root / method))
  return root


def _stage_conv_leaves(params):
  """{path: {field: array}} for the stage convs of a restored (plain dict) params tree."""
  out = {}
  for block, layers in params.items():
    if block.startswith("stage"):
      for name, leaves in layers.items():
        if "conv" in name:
          out[f"{block}/{name}"] = leaves["kernel"]
  return out


def _s3_signs_and_low(kernel):
  """Signs, low-value mask, and how many weights sit so near the threshold that rounding may move them."""
  sign = np.where(np.asarray(kernel["sign"]) >= 0, 1, -1)
  nonzero = np.asarray(kernel["sparse"]) > 0
  return sign * nonzero, ~nonzero, 0  # the threshold is a sign test: exact on every CPU


def _float_signs_and_low(kernel):
  """The float threshold 0.7 * mean|w| is a reduction: XLA and numpy sum in different orders (and AVX2
  and AVX-512 CPUs in different vector widths), so the threshold itself may differ in its last bits; a
  weight within 1e-6 of it (relative) may fall on either side. Such weights are counted, not guessed."""
  w = np.asarray(kernel)
  threshold = 0.7 * np.mean(np.abs(w))
  near = np.sum(np.abs(np.abs(w) - threshold) <= 1e-6 * threshold)
  return np.sign(w), np.abs(w) < threshold, near


@pytest.mark.parametrize("method", ["s3", "float"])
def test_dynamics_match_numpy_on_two_checkpoints(runs, method):
  workdir = str(runs / method)
  (before, _), (after, _) = restore_checkpoint(workdir, 4), restore_checkpoint(workdir, 8)
  measure = _s3_signs_and_low if method == "s3" else _float_signs_and_low
  flips = lows = near = total = 0
  for path, kernel in _stage_conv_leaves(after["params"]).items():
    sign_after, low, on_threshold = measure(kernel)
    sign_before, _, _ = measure(_stage_conv_leaves(before["params"])[path])
    flips += np.sum(sign_after * sign_before < 0)
    lows += np.sum(low)
    near += on_threshold
    total += sign_after.size
  # ResNet-8's stage convs: 2 x 3*3*16*16, then per stage 3*3*c*2c + 1x1 c*2c + 3*3*2c*2c.
  assert total == 2 * 2304 + (4608 + 512 + 9216) + (18432 + 2048 + 36864) == QUANTIZED
  record = [r for r in read_metrics(workdir) if r["step"] == 8 and "eval/top1" in r][0]
  assert flips > 0  # the test can tell a frozen net from a moving one
  np.testing.assert_allclose(record["dynamics/sign_flip_rate"], flips / total, rtol=1e-6)
  np.testing.assert_allclose(record["dynamics/sign_flip_rate_per_1k_steps"], flips / total * 1000 / 4,
                             rtol=1e-6)
  assert near <= 5  # a handful of 269,824 at most; else the comparison would say little
  assert abs(record["dynamics/low_value_rate"] * total - lows) <= near + 1e-6 * lows
  # Per-layer figures go to TensorBoard only.
  assert not any(k.startswith("dynamics_layers/") for k in record)


def test_report_writes_figures_and_summary(runs, tmp_path):
  out = tmp_path / "report"
  result = subprocess.run([sys.executable, "report.py", f"--workdirs={runs}/*", f"--output={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  sizes = {"curves.png": (462, 1210), "dynamics.png": (462, 1210), "levels.png": (473, 704)}
  for name, (height, width) in sizes.items():
    image = matplotlib.image.imread(out / name)
    assert image.shape[:2] == (height, width), name
    assert image[..., :3].std() > 0.05  # not blank
  with open(out / "summary.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["run"] for r in rows] == ["float seed0", "s3 3b normal seed0"]
  for row in rows:
    evals = [r["eval/top1"] for r in read_metrics(row["workdir"]) if "eval/top1" in r]
    assert float(row["final_top1"]) == evals[-1] and float(row["best_top1"]) == max(evals)
    assert row["steps"] == "8" and row["model"] == "resnet8" and row["data"] == "digits"
  # Stored at 3 bits, the quantized convs take 3/32 of their float32 bytes.
  s3, fp = rows[1], rows[0]
  assert int(s3["params"]) == int(fp["params"])
  expected = (QUANTIZED * 3 / 8 + (int(fp["params"]) - QUANTIZED) * 4) / 1e6
  np.testing.assert_allclose(float(s3["stored_MB"]), expected, rtol=1e-9)
  assert "| s3 3b normal seed0 | s3 | 3 | normal |" in (out / "summary.md").read_text()


def test_report_on_a_run_in_progress_and_bad_workdirs(tmp_path):
  from s3jax.report import write_report
  workdir = tmp_path / "fresh"
  workdir.mkdir()
  config = load_config("digits", **{"quant.method": "denseshift"})
  (workdir / "config.json").write_text(config.to_json())
  (workdir / "metrics.jsonl").write_text('{"step": 5, "train/loss": 2.0}\n{"step": 10, "train/l')
  mark_in_progress(str(workdir))  # this process, alive: the run is writing its last line right now
  paths = write_report([str(workdir)], str(tmp_path / "out"))
  assert all(os.path.getsize(p) > 0 for p in paths.values())
  result = subprocess.run([sys.executable, "report.py", f"--workdirs={tmp_path}/nothing*",
                           f"--output={tmp_path}/o"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert "matches no workdir" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("lines, in_progress, bad_line", [
    ('{"step": 5, "train/loss": 2.0}\n{"step": 10, "train/l\n{"step": 15, "train/loss": 1.0}\n', True, 2),
    ('{"step": 5, "train/loss": 2.0}\n[1, 2]\n', True, 2),
    ('{"step": 5, "train/loss": 2.0}\n{"step": 10, "train/l', False, 2),  # cut short, but no run is writing
])
def test_a_corrupt_metrics_line_is_named_by_the_report(tmp_path, lines, in_progress, bad_line):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(load_config("digits").to_json())
  (workdir / "metrics.jsonl").write_text(lines)
  if in_progress:
    mark_in_progress(str(workdir))
  result = subprocess.run([sys.executable, "report.py", f"--workdirs={workdir}", f"--output={tmp_path}/out"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  message = result.stderr.strip().splitlines()
  assert len(message) == 1 and message[0].startswith(f"error: {workdir}/metrics.jsonl, line {bad_line}, is not"), message
  assert "fix or delete that line" in message[0]
  assert (workdir / "metrics.jsonl").read_text() == lines and not (tmp_path / "out").exists()


def test_run_labels_tell_apart_every_setting_the_grids_vary():
  from s3jax.report.runs import run_label

  def label(**quant):
    config = load_config("vit_mnist", **{f"quant.{k}": v for k, v in quant.items()}).to_dict()
    return run_label(config)

  assert label() == "s3 3b normal learned-scale seed0"
  assert label(scale_gradient="through") == "s3 3b normal learned-scale gradient-through seed0"
  assert label(method="denseshift", scale="none", scale_gradient="through") == "denseshift 3b seed0"
  assert label(method="float") == "float seed0"
  converted = load_config("mnist_finetune").to_dict()
  assert run_label(converted) == "s3 3b normal from-float seed0"
