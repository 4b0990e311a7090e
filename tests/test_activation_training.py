"""Quantized activations through the trainer and every deployment path, on real processes: LSQ step sizes in
the train state survive kill -9 bit for bit, are refused by a resume with other activation settings, and
the export's plain, shift-add, StableHLO and LiteRT paths compute what the trainer evaluated."""
import json
import os
import signal
import subprocess
import time

import chex
import numpy as np
import pytest

from helpers import (REPO, cli_command, cli_env, load_config, logged_step,
                     restore_checkpoint, run_cli, run_tool)
from s3jax.errors import ConfigError

pytestmark = pytest.mark.slow

LSQ = ("quant.activations=lsq", "quant.activation_bits=8", "quant.activation_points=integer")
# 80 steps of batch 64 reach about 90% (40 of batch 32: 36%, where near-ties make any agreement a coin toss).
RUN = ("total_steps=80", "log_every_steps=5", "checkpoint_every_steps=10", "eval_every_steps=80",
       "keep_checkpoints=10") + LSQ
# Integer points: each block's input, its second conv's input and both summands of its residual sum.
LAYERS = [f"stage{i}_block0/{point}" for i in (1, 2, 3)
          for point in ("input", "conv2", "branch") + (("shortcut",) * (i > 1))]


def _final_top1(workdir) -> float:
  return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl")) if "eval/top1" in l][-1]["eval/top1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """An uninterrupted 80-step run of the digits ResNet-8 with 8-bit LSQ grids at its integer points."""
  workdir = str(tmp_path_factory.mktemp("lsq"))
  done = run_cli("digits", workdir, *RUN, devices=1)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "inputs {'kind': 'lsq', 'bits': 8, 'signed': 'auto'}" in done.stderr
  return workdir


def test_kill_9_then_resume_gives_the_same_step_sizes_and_metrics(trained, tmp_path):
  crashed = str(tmp_path)
  proc = subprocess.Popen(cli_command("digits", crashed, *RUN), cwd=REPO, env=cli_env(1),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while logged_step(crashed) < 45 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  assert proc.poll() is None, proc.stderr.read()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=120)
  resumed = run_cli("digits", crashed, *RUN, devices=1)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "from step 0:" not in resumed.stderr
  (want, step_a), (got, step_b) = restore_checkpoint(trained), restore_checkpoint(crashed)
  assert step_a == step_b == 80
  chex.assert_trees_all_equal(want, got)  # bit-identical, step sizes included
  steps = [want["params"][layer.split("/")[0]][layer.split("/")[1]]["input_step"] for layer in LAYERS]
  assert all(float(s) > 0 for s in steps) and len({float(s) for s in steps}) == len(steps)
  assert open(os.path.join(trained, "metrics.jsonl")).read() == open(os.path.join(crashed, "metrics.jsonl")).read()

  refused = run_cli("digits", crashed, *RUN, "quant.activation_bits=4", "total_steps=90", devices=1)
  assert refused.returncode != 0 and "Traceback" not in refused.stderr
  assert refused.stderr.strip().splitlines()[-1] == (
      f"error: the checkpoint at step 80 in {crashed}/checkpoints was written with activations kind=lsq bits=8 "
      "signed=auto points=integer, not kind=lsq bits=4 signed=auto points=integer; use a new --workdir or the "
      "config it was trained with.")


def test_the_export_runs_the_trainers_quantized_inputs_on_every_path(trained, tmp_path):
  export = str(tmp_path / "export")
  run_tool("export.py", f"--workdir={trained}", f"--output={export}", "--litert=float,dynamic_int8,full_int8")
  manifest = json.load(open(os.path.join(export, "manifest.json")))
  assert manifest["activations"] == {"kind": "lsq", "bits": 8, "signed": "auto", "layers": LAYERS}
  from s3jax import data
  from s3jax.deploy.from_workdir import evaluate_export, export_checkpoint
  config = load_config("digits")
  dataset = data.create_dataset(config)
  results = {path: evaluate_export(config, export, path, dataset=dataset) for path in ("plain", "shift_add", "stablehlo")}
  top1 = {path: metrics["eval/top1"] for path, (metrics, _, _) in results.items()}
  assert top1["plain"] == pytest.approx(_final_top1(trained), abs=1e-6)  # the trainer's eval
  assert top1["shift_add"] == top1["stablehlo"] == top1["plain"]
  for mode, least in (("float", 1.0), ("dynamic_int8", 0.97)):
    _, predictions, _ = evaluate_export(config, export, "litert", mode, dataset=dataset)
    assert np.mean(predictions == results["plain"][1]) >= least, mode
  final, agreement = run_tool("evaluate.py", f"--export={export}", "--path=litert", "--litert_mode=full_int8")[-2:]
  assert agreement.startswith("agreement with plain: ") and float(agreement.split()[3]) >= 0.98, agreement
  assert final.startswith("final eval/top1 = ") and abs(float(final.split()[3]) - top1["plain"]) <= 0.02, final

  # Every conv in the blocks runs on int8 kernels, int8 in and out, and so do the residual sums but the
  # last (whose output the float head reads): every tensor between quantized layers is int8.
  from ai_edge_litert.interpreter import Interpreter
  interpreter = Interpreter(model_path=os.path.join(export, "model_full_int8_b1.tflite"))
  tensors = {t["index"]: t["dtype"].__name__ for t in interpreter.get_tensor_details()}
  ops = [(op["op_name"], [tensors[i] for i in op["inputs"][:2]], tensors[op["outputs"][0]])
         for op in interpreter._get_ops_details()]
  assert "STABLEHLO_COMPOSITE" not in {name for name, _, _ in ops}
  assert ops.count(("CONV_2D", ["int8", "int8"], "int8")) == 8, ops  # the stem (1 channel) is a float DEPTHWISE_CONV_2D
  assert ops.count(("ADD", ["int8", "int8"], "int8")) == 2 and ops.count(("QUANTIZE", ["float32"], "int8")) == 1, ops

  with pytest.raises(ConfigError, match=r"^ONNX export of quantized activations \(lsq\) is not supported"):
    export_checkpoint(trained, str(tmp_path / "onnx"), stablehlo=False, onnx=True)
  assert not os.path.exists(tmp_path / "onnx")


def test_the_activation_study_runs_its_quick_grid_and_writes_its_page(tmp_path):
  output = str(tmp_path / "study")
  lines = run_tool("benchmarks/activation_study.py", f"--output={output}", "--quick")
  assert lines[-1] == f"wrote {output}/RESULTS.md"
  assert sum("top-1" in line for line in lines) == 2
  page = open(os.path.join(output, "RESULTS.md")).read()
  assert "| S3 | 8 (LSQ) | " in page and "| DeepShift-PS | 16.16 fixed point | " in page
  results = json.load(open(os.path.join(output, "results", "activations", "activations.json")))
  assert set(results["mnist"]) == {"mnist_s3_a8", "mnist_deepshift_ps_fixed"}
  assert all(len(v) == 1 and 0 <= v[0] <= 1 for v in results["mnist"].values())
  assert os.path.getsize(os.path.join(output, "results", "activations", "activations.png")) > 10_000
  assert run_tool("benchmarks/activation_study.py", f"--output={output}", "--quick", "--page_only") == lines[-1:]
