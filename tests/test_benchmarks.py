"""The benchmark scripts run from a fresh install, and S3's gradient all-reduce is weight-sized."""
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO, cli_env

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from benchlib import collective_bytes  # noqa: E402

pytestmark = pytest.mark.slow  # runs the trainer, a CLI or several processes


def test_collective_bytes_parses_sync_and_async_collectives():
  hlo = """
  %all-reduce.1 = (f32[16]{0}, f32[16]{0}) all-reduce(%a, %b), channel_id=2
  %all-reduce.2 = bf16[3,3,8,8]{3,2,1,0} all-reduce(%c), channel_id=3
  %all-gather-start.1 = (f32[4]{0}, f32[32]{0}) all-gather-start(%d), dimensions={0}
  %all-gather-done.1 = f32[32]{0} all-gather-done(%all-gather-start.1)
  %add.1 = f32[16]{0} add(%x, %y)
  """
  got = collective_bytes(hlo)
  assert got["all-reduce"] == 2 * 16 * 4 + 9 * 64 * 2
  assert got["all-gather"] == 32 * 4


def run_script(*args, devices=1):
  result = subprocess.run([sys.executable, *args], cwd=REPO, env=cli_env(devices), capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_step_time_script_reports_every_field():
  out = run_script("benchmarks/step_time.py", "--model=resnet8", "--batch=8", "--image_size=16",
                   "--num_classes=10", "--steps=10", "--compare_unfused", "--compare_memory_scheduler",
                   "--compare_banks")
  for key in ("s3_step_s", "fp_step_s", "ratio", "unfused_ratio", "memory_scheduler_ratio", "s3_compile_s",
              "banked_ratio", "per_layer_ratio", "s3_banked_compile_s", "s3_banked_fusions",
              "fp_compile_s", "model", "batch", "image_size", "backend", "memory_ratio", "unfused_memory_ratio",
              "s3_fusions", "s3_unfused_copies"):
    assert key in out, key
  assert out["s3_step_s"] > 0 and out["fp_step_s"] > 0 and out["s3_peak_bytes"] > 0
  # The fused step keeps no latent gradients between the pull-back and the update, and copies nothing more.
  assert out["s3_temp_bytes"] < out["s3_unfused_temp_bytes"]
  assert out["s3_copy_bytes"] - out["fp_copy_bytes"] <= 8  # a scalar (the step the materialize cond reads)
  assert out["s3_memory_scheduler_temp_bytes"] <= out["s3_temp_bytes"]
  # Banks: the latent work of all layers in a few kernels (S3 adds 4 latents and 4 momenta per layer).
  assert out["s3_fusions"] == out["s3_banked_fusions"]  # on CPU the trainer banks resnet8's small layers
  assert out["s3_banked_fusions"] < out["s3_per_layer_fusions"] - 5 * 8  # resnet8: 8 quantized convs (two 1x1 downsamples)
  assert out["s3_banked_copy_bytes"] - out["fp_copy_bytes"] <= 8


def test_xla_cpu_options_script_compares_and_reports_unknown_options():
  out = run_script("benchmarks/xla_cpu_options.py", "--model=resnet8", "--batch=8", "--image_size=16",
                   "--num_classes=10", "--steps=2", "--options=default,ynn_eltwise,multi_output_fusion")
  assert "No such compile option" in out["rejected"]["multi_output_fusion"]
  assert out["default_32"]["vs_default"] == 1.0 and out["ynn_eltwise_32"]["step_s"] > 0


def test_step_memory_script_reports_each_phase():
  out = run_script("benchmarks/step_memory.py", "--model=resnet8", "--batch=8", "--image_size=16",
                   "--num_classes=10", "--steps=2", "--compile_first")
  for variant in ("s3", "fp"):
    phases = out[variant]["phases"]
    assert list(phases) == ["JAX started", "step compiled", "state created", "first step run",
                            "after 2 steps", "after malloc_trim"]
    assert phases["JAX started"]["VmHWM"] > 0
    assert out[variant]["live_array_gb"] == out[variant]["argument_gb"]  # the state (and the batch)
  assert out["s3"]["argument_gb"] > out["fp"]["argument_gb"] and out["peak_ratio"] > 0


def test_export_size_and_inference_scripts_run():
  # The 3-bit model is inference.py's (1000 classes, 16 px): its init program compiles once for both.
  out = run_script("benchmarks/export_sizes.py", "--models=resnet8", "--bits=3,4", "--num_classes=1000",
                   "--image_size=16")
  assert [round(r["quantized_ratio"], 2) for r in out] == [10.67, 8.0]
  out = run_script("benchmarks/inference.py", "--model=resnet8", "--image_size=16", "--batches=2",
                   "--repeats=1")
  assert {r["path"] for r in out["rows"]} == {"full precision", "plain", "shift_add"}


def test_deploy_runtimes_script_compares_every_runtime_with_sizes_and_peak_ram():
  pytest.importorskip("litert_converter", reason="the LiteRT extra (requirements-litert.txt)")
  pytest.importorskip("jax2onnx", reason="the ONNX extra (requirements-onnx.txt)")
  out = run_script("benchmarks/deploy_runtimes.py", "--model=mlp_tiny", "--batch=2", "--repeats=2")
  variants = {"XLA float32", "XLA plain", "StableHLO", "LiteRT float32", "LiteRT low-bit", "LiteRT dynamic int8",
              "LiteRT full int8", "ONNX float32", "ONNX MatMulNBits", "ONNX MatMulNBits int8"}
  rows = {r["variant"]: r for r in out["rows"]}
  assert set(rows) == variants and all(r["median_s"] > 0 and r["peak_ram_mb"] > 0 for r in rows.values())
  assert all(rows[v]["bytes"] > 0 for v in variants - {"XLA float32", "XLA plain"})
  assert out["best_lowbit"] in variants and 0 < out["lowbit_size_vs_float"] < 0.4  # 0.28 measured
  assert 0 < out["onnx_size_vs_float"] < 1 and out["stablehlo_vs_plain"] > 0 and out["lowbit_vs_xla_float"] > 0


def test_communication_and_input_scripts_run():
  # On 8 devices, S3's step moves as many bytes as FP's: dL/dW, not the 2+K latent gradients.
  out = run_script("benchmarks/communication.py", "--model=resnet8", "--image_size=16", "--batch=16")
  assert out["devices"] == 8
  assert out["fp_collective_bytes"] >= 4 * out["fp_param_leaves_size"]  # each float32 weight gradient, once
  assert out["s3_collective_bytes"] <= 1.05 * out["fp_collective_bytes"]
  out = run_script("benchmarks/input_pipeline.py", "--images=16", "--batch=8", "--batches=2",
                   "--image_size=64")
  assert out["images_per_s"] > 0


def test_eval_cost_and_scale_study_scripts_run():
  out = run_script("benchmarks/eval_cost.py", "--config=digits", "--repeats=1")
  assert out["with_s"] > 0 and out["without_s"] > 0
  out = run_script("benchmarks/scale_study.py", "--quick")
  rows = {(r["method"], r["scale"]): r for r in out["runs"]}
  assert set(rows) == {("float", "-"), ("s3", "none"), ("s3", "fixed"), ("s3", "learned")}
  # Without a scale the first logits of the normalisation-free CNN explode; a fixed scale keeps them
  # at the float model's size.
  assert rows[("s3", "none")]["first_logit_std"] > 100 * rows[("float", "-")]["first_logit_std"]
  ratio = rows[("s3", "fixed")]["first_logit_std"] / rows[("float", "-")]["first_logit_std"]
  assert 0.3 < ratio < 3
