r"""What S3 costs over full precision: train-step time, compile time and peak memory, side by side.

  python benchmarks/step_time.py --model=resnet18 --batch=16 --image_size=112
  python benchmarks/step_time.py --model=resnet50 --batch=128 --image_size=224 --half_precision  # GPU

Times the trainer's jitted step for S3 (or --method; at --bits) and full precision (bits=32) of the same
model in one process, interleaved step by step, and reports medians after warm-up. --compare_banks adds
S3 with every layer's latents in banks and with none (the trainer banks the small layers on CPU, every
layer elsewhere); --compare_unfused adds S3 with the pull-back outside the update (the step before the fused one); --compare_memory_scheduler adds
both compiled with XLA:CPU's memory-optimized schedule. Peak memory is measured in separate child
processes (device memory stats on GPU, peak RSS on CPU), plus XLA's own compiled memory analysis and,
from the compiled HLO, fusion and copy counts. Ends with one JSON line.
"""
import json
import resource
import statistics
import subprocess
import sys
import time

import jax
from absl import app, flags

from benchlib import (FULL_PRECISION_BITS, child_command, compiled_step, define_step_flags, fusion_and_copy_counts,
                      process_memory_bytes, synthetic_step)
from s3jax.cli import parse_flags
from s3jax.training import sharding

VARIANTS = ("s3", "fp", "s3_unfused", "s3_banked", "s3_per_layer")
# --config.bank_latents of each variant; the others take the trainer's ('auto').
BANK_LATENTS = {"s3_banked": "on", "s3_per_layer": "off", "s3_unfused": "off"}
# XLA:CPU's memory-optimized schedule, per executable (the default is concurrency-optimized).
MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
SCHEDULER_VARIANTS = ("s3_memory_scheduler", "fp_memory_scheduler")


define_step_flags()
flags.DEFINE_enum("method", "s3", ["s3", "denseshift", "deepshift_q", "deepshift_ps"],
                  "The quantized method timed against full precision (the 's3' variants run it).")
flags.DEFINE_integer("steps", 10, "Timed steps per variant (>= 10).")
flags.DEFINE_integer("warmup", 2, "Untimed steps before timing.")
flags.DEFINE_bool("half_precision", False, "Compute in bfloat16.")
flags.DEFINE_bool("skip_memory", False, "Skip the memory child processes.")
flags.DEFINE_bool("compare_unfused", False, "Also time S3 with the pull-back outside the update.")
flags.DEFINE_bool("compare_banks", False, "Also time S3 with every layer's latents in banks and with "
                  "per-layer latents only (the trainer's own choice is the 's3' variant).")
flags.DEFINE_bool("compare_memory_scheduler", False,
                  "Also time S3 and FP compiled with XLA:CPU's memory-optimized schedule.")
flags.DEFINE_enum("only", None, VARIANTS, "Internal: run one variant in a child process (peak memory).")


def build(args, variant, mesh):
  bits = FULL_PRECISION_BITS if variant.startswith("fp") else args.bits
  state, step, batch = synthetic_step(args.model, args.batch, args.image_size, bits, mesh,
                                      args.num_classes, args.half_precision, method=args.method,
                                      fused_pullback=variant != "s3_unfused",
                                      bank_latents=BANK_LATENTS.get(variant, "auto"))
  options = MEMORY_SCHEDULER if variant in SCHEDULER_VARIANTS else None
  compiled, compile_s = compiled_step(state, step, batch, options)
  return {"state": state, "step": compiled, "batch": batch, "compile_s": compile_s,
          "memory": compiled.memory_analysis(), "hlo": fusion_and_copy_counts(compiled.as_text())}


def run_step(variant) -> float:
  start = time.perf_counter()
  variant["state"], metrics = variant["step"](variant["state"], variant["batch"])
  jax.block_until_ready((variant["state"], metrics))
  return time.perf_counter() - start


def peak_memory_child(args) -> dict:
  """One variant alone in this process: run a few steps, report peak memory."""
  mesh = sharding.make_data_mesh()
  with jax.set_mesh(mesh):
    variant = build(args, args.only, mesh)
    for _ in range(3):
      run_step(variant)
  stats = jax.devices()[0].memory_stats() or {}
  return {"peak_device_bytes": stats.get("peak_bytes_in_use"), "peak_rss_bytes": peak_rss_bytes()}


def peak_rss_bytes() -> int:
  """This process's peak RSS (ru_maxrss where there is no /proc)."""
  return (process_memory_bytes().get("VmHWM")
          or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def measure_peak_memory(args, names) -> dict:
  out = {}
  for which in names:
    result = subprocess.run(child_command(__file__, which), capture_output=True, text=True, check=True)
    out[which] = json.loads(result.stdout.strip().splitlines()[-1])
  key = "peak_device_bytes" if out["s3"]["peak_device_bytes"] else "peak_rss_bytes"
  result = {"memory_kind": key, **{f"{n}_peak_bytes": out[n][key] for n in names},
            "memory_ratio": round(out["s3"][key] / out["fp"][key], 3)}
  if "s3_unfused" in out:
    result["unfused_memory_ratio"] = round(out["s3_unfused"][key] / out["fp"][key], 3)
  return result


def main(argv):
  del argv
  args = flags.FLAGS
  if args.only:
    print(json.dumps(peak_memory_child(args)))
    return
  names = VARIANTS[:2] + (("s3_unfused",) if args.compare_unfused else ())
  names += ("s3_banked", "s3_per_layer") if args.compare_banks else ()
  names += SCHEDULER_VARIANTS if args.compare_memory_scheduler else ()
  mesh = sharding.make_data_mesh()
  with jax.set_mesh(mesh):
    variants = {name: build(args, name, mesh) for name in names}
    for _ in range(args.warmup):
      for v in variants.values():
        run_step(v)
    times = {name: [] for name in names}
    for i in range(args.steps):
      for name in (names if i % 2 == 0 else names[::-1]):  # interleaved, order alternating
        times[name].append(run_step(variants[name]))
    for name in names:
      print(f"per-step times (s): {name:>10} {[round(t, 4) for t in times[name]]}", file=sys.stderr)

  median = {name: statistics.median(times[name]) for name in names}
  result = {
      "model": args.model, "method": args.method, "batch": args.batch, "image_size": args.image_size,
      "bits": args.bits,
      "half_precision": args.half_precision, "backend": jax.default_backend(),
      "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
      "s3_step_s": round(median["s3"], 5), "fp_step_s": round(median["fp"], 5),
      "ratio": round(median["s3"] / median["fp"], 3),
      "s3_images_per_s": round(args.batch / median["s3"], 1),
      "fp_images_per_s": round(args.batch / median["fp"], 1),
  }
  for name in ("s3_unfused", "s3_banked", "s3_per_layer"):
    if name in median:
      result[f"{name[3:]}_ratio"] = round(median[name] / median["fp"], 3)
  if "s3_memory_scheduler" in median:
    result["memory_scheduler_ratio"] = round(median["s3_memory_scheduler"] / median["fp_memory_scheduler"], 3)
  for name, v in variants.items():
    # XLA's compiled memory analysis: arguments = train state + batch, temp = activations etc.
    result.update({f"{name}_compile_s": round(v["compile_s"], 2),
                   f"{name}_argument_bytes": v["memory"].argument_size_in_bytes,
                   f"{name}_temp_bytes": v["memory"].temp_size_in_bytes,
                   **{f"{name}_{k}": n for k, n in v["hlo"].items()}})
  if not args.skip_memory:
    result.update(measure_peak_memory(args, [n for n in names if n in VARIANTS[:3]]))
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
