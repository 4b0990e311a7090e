r"""What S3 costs over full precision: train-step time, compile time and peak memory, side by side.

  python benchmarks/step_time.py --model=resnet18 --batch=16 --image_size=112
  python benchmarks/step_time.py --model=resnet50 --batch=128 --image_size=224 --half_precision  # GPU

Times the trainer's jitted step for S3 (--bits) and full precision (bits=32) of the same model in one
process, interleaved step by step, and reports medians after warm-up. Peak memory is measured in two
separate child processes (device memory stats on GPU, peak RSS on CPU), plus XLA's own compiled memory
analysis. Ends with one JSON line.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import jax

from s3jax import sharding
from s3jax.benchmarking import compiled_step, synthetic_step

FP_BITS = 32


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet18")
  parser.add_argument("--batch", type=int, default=16, help="global batch")
  parser.add_argument("--image_size", type=int, default=112)
  parser.add_argument("--bits", type=int, default=3)
  parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (>= 10)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--num_classes", type=int, default=1000)
  parser.add_argument("--half_precision", action="store_true")
  parser.add_argument("--skip_memory", action="store_true", help="skip the two memory child processes")
  parser.add_argument("--only", choices=("s3", "fp"), help=argparse.SUPPRESS)  # memory child mode
  return parser.parse_args(argv)


def build(args, bits, mesh):
  state, step, batch = synthetic_step(args.model, args.batch, args.image_size, bits, mesh,
                                      args.num_classes, args.half_precision)
  compiled, compile_s = compiled_step(state, step, batch)
  return {"state": state, "step": compiled, "batch": batch, "compile_s": compile_s,
          "memory": compiled.memory_analysis()}


def run_step(variant) -> float:
  start = time.perf_counter()
  variant["state"], metrics = variant["step"](variant["state"], variant["batch"])
  jax.block_until_ready((variant["state"], metrics))
  return time.perf_counter() - start


def peak_memory_child(args) -> dict:
  """One variant alone in this process: run a few steps, report peak memory."""
  mesh = sharding.make_data_mesh()
  with jax.set_mesh(mesh):
    variant = build(args, args.bits if args.only == "s3" else FP_BITS, mesh)
    for _ in range(3):
      run_step(variant)
  stats = jax.devices()[0].memory_stats() or {}
  return {"peak_device_bytes": stats.get("peak_bytes_in_use"), "peak_rss_bytes": peak_rss_bytes()}


def peak_rss_bytes() -> int:
  """This process's peak RSS. VmHWM, not ru_maxrss, which Linux carries over from the forking parent."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_peak_memory(args) -> dict:
  out = {}
  for which in ("s3", "fp"):
    cmd = [sys.executable, os.path.abspath(__file__), f"--model={args.model}", f"--batch={args.batch}",
           f"--image_size={args.image_size}", f"--bits={args.bits}", f"--num_classes={args.num_classes}",
           f"--only={which}"] + (["--half_precision"] if args.half_precision else [])
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out[which] = json.loads(result.stdout.strip().splitlines()[-1])
  key = "peak_device_bytes" if out["s3"]["peak_device_bytes"] else "peak_rss_bytes"
  return {"memory_kind": key, "s3_peak_bytes": out["s3"][key], "fp_peak_bytes": out["fp"][key],
          "memory_ratio": round(out["s3"][key] / out["fp"][key], 3)}


def main():
  args = parse_args()
  if args.only:
    print(json.dumps(peak_memory_child(args)))
    return
  mesh = sharding.make_data_mesh()
  with jax.set_mesh(mesh):
    variants = {"s3": build(args, args.bits, mesh), "fp": build(args, FP_BITS, mesh)}
    for _ in range(args.warmup):
      for v in variants.values():
        run_step(v)
    times = {"s3": [], "fp": []}
    for i in range(args.steps):
      for name in (("s3", "fp") if i % 2 == 0 else ("fp", "s3")):  # interleaved, order alternating
        times[name].append(run_step(variants[name]))
    print(f"per-step times (s): s3 {[round(t, 4) for t in times['s3']]}", file=sys.stderr)
    print(f"                    fp {[round(t, 4) for t in times['fp']]}", file=sys.stderr)

  s3_s, fp_s = statistics.median(times["s3"]), statistics.median(times["fp"])
  mem_s3, mem_fp = variants["s3"]["memory"], variants["fp"]["memory"]
  result = {
      "model": args.model, "batch": args.batch, "image_size": args.image_size, "bits": args.bits,
      "half_precision": args.half_precision, "backend": jax.default_backend(),
      "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
      "s3_step_s": round(s3_s, 5), "fp_step_s": round(fp_s, 5), "ratio": round(s3_s / fp_s, 3),
      "s3_images_per_s": round(args.batch / s3_s, 1), "fp_images_per_s": round(args.batch / fp_s, 1),
      "s3_compile_s": round(variants["s3"]["compile_s"], 2),
      "fp_compile_s": round(variants["fp"]["compile_s"], 2),
      # XLA's compiled memory analysis: arguments = train state + batch, temp = activations etc.
      "s3_argument_bytes": mem_s3.argument_size_in_bytes, "fp_argument_bytes": mem_fp.argument_size_in_bytes,
      "s3_temp_bytes": mem_s3.temp_size_in_bytes, "fp_temp_bytes": mem_fp.temp_size_in_bytes,
  }
  if not args.skip_memory:
    result.update(measure_peak_memory(args))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
