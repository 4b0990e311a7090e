r"""Bytes that the data-parallel train step moves between devices per step, S3 versus full precision.

  python benchmarks/communication.py --model=resnet18 --image_size=112 --devices=8

Compiles the trainer's train step over 8 fake CPU devices (batch sharded on 'data') and sums the bytes of
every collective in the compiled HLO. Goal: S3 all-reduces dL/dW (one weight-sized tensor per layer),
not its 2+K latent gradients, so the ratio is ~1. Ends with one JSON line.
"""
import json
import os
import sys

from absl import app, flags

from s3jax.cli import parse_flags


def main(argv):
  del argv
  args = flags.FLAGS
  # Fake CPU devices must be requested before JAX starts.
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax
  from s3jax.training import sharding
  from benchlib import collective_bytes, compiled_step, synthetic_step

  mesh = sharding.make_data_mesh()
  totals, params = {}, {}
  with jax.set_mesh(mesh):
    for name, bits in (("s3", args.bits), ("fp", 32)):
      state, step, batch = synthetic_step(args.model, args.batch, args.image_size, bits, mesh, shapes_only=True)
      compiled, _ = compiled_step(state, step, batch)
      totals[name] = collective_bytes(compiled.as_text())
      params[name] = sum(x.size for x in jax.tree.leaves(state.params))
  s3_total, fp_total = sum(totals["s3"].values()), sum(totals["fp"].values())
  print(f"collective bytes per step: s3 {totals['s3']}\n                           fp {totals['fp']}",
        file=sys.stderr)
  print(json.dumps({"model": args.model, "image_size": args.image_size, "devices": args.devices,
                    "bits": args.bits, "s3_collective_bytes": s3_total, "fp_collective_bytes": fp_total,
                    "ratio": round(s3_total / fp_total, 4), "s3_param_leaves_size": params["s3"],
                    "fp_param_leaves_size": params["fp"]}))


def _define_flags():
  flags.DEFINE_string("model", "resnet18", "Model name (s3jax.models).")
  flags.DEFINE_integer("image_size", 112, "Image height and width in pixels.")
  flags.DEFINE_integer("batch", 16, "Global batch size.")
  flags.DEFINE_integer("bits", 3, "Bit width of the quantized method.")
  flags.DEFINE_integer("devices", 8, "Fake CPU devices.")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=parse_flags)
