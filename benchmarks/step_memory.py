r"""Where a train step's host memory goes on CPU: VmHWM / VmRSS after each phase of one process.

  python benchmarks/step_memory.py --model=resnet18 --batch=16 --image_size=112
  python benchmarks/step_memory.py --model=resnet18 --batch=16 --image_size=112 --compile_first

One process per variant (3-bit S3 and full precision; peak RSS cannot be reset within a process). Each
builds the trainer's state and jitted step (`benchlib`), by default in the trainer's order
(state, then compile), with --compile_first compiling from abstract shapes before the state exists. After
the steps it reports the bytes of live JAX arrays and VmRSS after glibc's malloc_trim, which returns the
heap memory the process holds but no longer uses. Ends with one JSON line.
"""
import ctypes
import json
import subprocess
import sys

import jax
from absl import app, flags

from benchlib import (FULL_PRECISION_BITS, child_command, compiled_step, define_step_flags, process_memory_bytes,
                      synthetic_batch, synthetic_config)
from s3jax.cli import parse_flags
from s3jax.models import create_model
from s3jax.training import sharding
from s3jax.training.loop import jit_train_step
from s3jax.records.variables import run_init_program
from s3jax.records.resolved import resolve_run
from s3jax.training.state import jitted_initializer

VARIANTS = {"s3": None, "fp": FULL_PRECISION_BITS}


define_step_flags()
flags.DEFINE_integer("steps", 3, "Steps run after compiling.")
flags.DEFINE_bool("compile_first", False, "Compile the step from abstract shapes before creating the state.")
flags.DEFINE_enum("only", None, list(VARIANTS), "Internal: run one variant in a child process.")


def memory_gb() -> dict:
  """This process's VmHWM (peak) and VmRSS (now), in GB."""
  return {key: round(n / 1e9, 3) for key, n in process_memory_bytes().items()}


def phases(args) -> dict:
  """One variant in this process: memory after each phase."""
  bits = VARIANTS[args.only] or args.bits
  mesh = sharding.make_data_mesh()
  config = synthetic_config(args.model, args.batch, bits, args.num_classes)
  model = create_model(args.model, args.num_classes)
  image_shape = (args.image_size, args.image_size, 3)
  out = {"JAX started": memory_gb()}
  with jax.set_mesh(mesh):
    batch = synthetic_batch(args.batch, image_shape, args.num_classes, mesh)
    init, tx, schedule = jitted_initializer(resolve_run(config, steps_per_epoch=100), model, image_shape, mesh)
    key = jax.random.key(config.seed)
    shapes = init.trace(key).out_info
    step = jit_train_step(model, tx, schedule, mesh)  # per-layer latents, as the trainer on CPU
    if args.compile_first:  # from the state's shapes alone
      compiled, _ = compiled_step(shapes, step, batch)
      out["step compiled"] = memory_gb()
    state = run_init_program(init, key)
    out["state created"] = memory_gb()
    if not args.compile_first:  # the trainer's order
      compiled, _ = compiled_step(state, step, batch)
      out["step compiled"] = memory_gb()
    for i in range(args.steps):
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      if i == 0:
        out["first step run"] = memory_gb()
    out[f"after {args.steps} steps"] = memory_gb()
    analysis = compiled.memory_analysis()
  ctypes.CDLL("libc.so.6").malloc_trim(0)
  out["after malloc_trim"] = memory_gb()
  return {"phases": out, "live_array_gb": round(sum(a.nbytes for a in jax.live_arrays()) / 1e9, 3),
          "argument_gb": round(analysis.argument_size_in_bytes / 1e9, 3),
          "temp_gb": round(analysis.temp_size_in_bytes / 1e9, 3)}


def main(argv):
  del argv
  args = flags.FLAGS
  if args.only:
    print(json.dumps(phases(args)))
    return
  result = {"model": args.model, "batch": args.batch, "image_size": args.image_size, "bits": args.bits,
            "order": "compile first" if args.compile_first else "state first (the trainer's)"}
  for name in VARIANTS:
    child = subprocess.run(child_command(__file__, name), capture_output=True, text=True, check=False)
    if child.returncode:
      sys.exit(f"error: the {name} child process failed:\n{child.stderr[-2000:]}")
    result[name] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"{name}: " + ", ".join(f"{phase} {m['VmHWM']:.2f} / {m['VmRSS']:.2f} GB"
                                  for phase, m in result[name]["phases"].items()), file=sys.stderr)
  peak = {name: max(m["VmHWM"] for m in result[name]["phases"].values()) for name in VARIANTS}
  result["peak_ratio"] = round(peak["s3"] / peak["fp"], 3)
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
