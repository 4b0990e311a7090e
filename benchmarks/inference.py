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
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from s3jax import quant  # noqa: E402
from s3jax.export import load, write_export  # noqa: E402
from s3jax.inference import plain_apply, shift_add_apply  # noqa: E402
from s3jax.models import create_model  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet18")
  parser.add_argument("--image_size", type=int, default=112)
  parser.add_argument("--method", default="s3")
  parser.add_argument("--bits", type=int, default=3)
  parser.add_argument("--batches", default="1,64")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  model = create_model(args.model, 1000)
  shape = (args.image_size, args.image_size, 3)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, *shape)), train=False))(jax.random.key(0))
  params = quant.to_latents(variables["params"], quant.DEFAULT_RESNET_RULES, jax.random.key(1),
                            quantizer=quant.quantizer(args.method, args.bits))
  float_apply = jax.jit(lambda x: model.apply(variables, x, train=False))
  with tempfile.TemporaryDirectory() as directory:
    write_export(params, variables["batch_stats"], directory, model=args.model, num_classes=1000,
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


if __name__ == "__main__":
  main()
