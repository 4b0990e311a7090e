r"""Inference from an export: plain path vs multiplication-free path vs full precision, on this CPU.

  python benchmarks/inference.py                                 # ResNet-18 at 112 px, S3 3 bits, batch 1 and 64
  python benchmarks/inference.py --model=resnet50 --bits=4 --batches=1,16

Every path runs the same model in eval mode on the same images:
- full precision: float weights (an untrained full-precision ResNet);
- plain: the export's codes decoded to float weights inside the jitted function;
- shift_add: each quantized conv as sum_k ldexp(conv(x, T_k), k) with {-1, 0, +1} masks T_k.
All jitted, one warm-up each, then interleaved repeats; prints medians and ratios to full precision, and
one JSON line. What the ratios say about real shift hardware: see docs/PERFORMANCE.md.
"""
import json
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from benchlib import FULL_PRECISION_BITS, initial_variables
from s3jax.cli import parse_flags
from s3jax.deploy.export_format import load, write_export
from s3jax.deploy.inference import plain_apply, shift_add_apply


def main(argv):
  del argv
  args = flags.FLAGS
  shape = (args.image_size, args.image_size, 3)
  model, params, batch_stats = initial_variables(args.model, args.image_size, args.bits, args.method)
  _, float_params, _ = initial_variables(args.model, args.image_size, FULL_PRECISION_BITS)
  float_variables = {"params": float_params, "batch_stats": batch_stats}
  float_apply = jax.jit(lambda x: model.apply(float_variables, x, train=False))
  with tempfile.TemporaryDirectory() as directory:
    write_export(params, batch_stats, directory, model=args.model, num_classes=1000,
                 input_spec={"shape": list(shape), "mean": [0.0] * 3, "std": [1.0] * 3, "pixels": "-"},
                 step=0)
    exported = load(directory)
  paths = {"full precision": float_apply, "plain": plain_apply(exported),
           "shift_add": shift_add_apply(exported)}
  rows = []
  print(f"{args.model} at {args.image_size} px, {args.method} {args.bits} bits, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s); median of {args.repeats}")
  for batch in (int(b) for b in args.batches.split(",")):
    images = jax.random.normal(jax.random.key(batch), (batch, *shape))
    for apply in paths.values():
      jax.block_until_ready(apply(images))  # compile
    times = {name: [] for name in paths}
    for _ in range(args.repeats):
      for name, apply in paths.items():
        start = time.perf_counter()
        jax.block_until_ready(apply(images))
        times[name].append(time.perf_counter() - start)
    base = statistics.median(times["full precision"])
    for name, values in times.items():
      median = statistics.median(values)
      rows.append({"batch": batch, "path": name, "median_s": median, "ratio_to_float": median / base})
      print(f"batch {batch:>3}  {name:>15}: {1000 * median:8.1f} ms  ({median / base:.2f}x full precision)",
            flush=True)
    plain = np.asarray(paths["plain"](images))
    diff = np.abs(np.asarray(paths["shift_add"](images)) - plain).max() / np.abs(plain).max()
    print(f"batch {batch:>3}  shift_add vs plain: max |logit difference| / max |logit| = {diff:.1e}")
  print(json.dumps({"model": args.model, "image_size": args.image_size, "method": args.method,
                    "bits": args.bits, "rows": rows}))


def _define_flags():
  flags.DEFINE_string("model", "resnet18", "Model name (s3jax.models).")
  flags.DEFINE_integer("image_size", 112, "Image height and width in pixels.")
  flags.DEFINE_string("method", "s3", "Quantization method (s3jax.quant.method_names()).")
  flags.DEFINE_integer("bits", 3, "Bit width of the quantized method.")
  flags.DEFINE_string("batches", "1,64", "Comma-separated batch sizes.")
  flags.DEFINE_integer("repeats", 5, "Timed repetitions (the median is reported).")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=parse_flags)
