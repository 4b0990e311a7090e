r"""LiteRT against float on the same runtime: latency and file size of an export's LiteRT files, on this CPU.

  python benchmarks/litert_latency.py --export=/tmp/s3_mnist_export     # a trained export (the demo's)
  python benchmarks/litert_latency.py --model=resnet20 --image_size=14   # random S3 latents, 3 bits

Side by side, interleaved, medians after one warm-up each, at every batch of --batches:
- XLA plain: the export's plain path (`plain_apply`, jitted);
- LiteRT float32: the same weights as float32 constants;
- LiteRT low-bit weights: int4/int8 levels, float activations ('float' mode);
- LiteRT dynamic int8: the same, with each quantized layer's input quantized at run time.
Prints a table, the CPU (and whether it has AVX-512 and VNNI), and one JSON line last.
"""
import json
import statistics
import subprocess
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from benchlib import initial_variables
from s3jax.cli import parse_flags
from s3jax.deploy import litert
from s3jax.deploy.export_format import load, write_export
from s3jax.deploy.inference import plain_apply


def cpu_name() -> str:
  try:
    info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
  except OSError:
    return "unknown CPU"
  name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Model name")), "?")
  return f"{name}; AVX-512 {'yes' if 'avx512f' in info else 'no'}, VNNI {'yes' if 'vnni' in info else 'no'}"


def _export(directory: str):
  args = flags.FLAGS
  if args.export:
    return load(args.export)
  shape = (args.image_size, args.image_size, args.channels)
  _, params, batch_stats = initial_variables(args.model, args.image_size, args.bits, "s3", 10, args.channels)
  write_export(params, batch_stats, directory, model=args.model, num_classes=10, step=0,
               input_spec={"shape": list(shape), "mean": [0.0] * args.channels, "std": [1.0] * args.channels,
                           "pixels": "-"})
  return load(directory)


def main(argv):
  del argv
  args = flags.FLAGS
  rows, summary = [], {}
  with tempfile.TemporaryDirectory() as directory:
    export = _export(directory)
    float32_fn = litert.lowbit_function(export, "float", lowbit=False)[0]
    print(f"{export.manifest['model']} {export.manifest['method']} {export.manifest['bits']} bits, input "
          f"{list(export.input_shape)}; {cpu_name()}; median of {args.repeats}")
    xla = plain_apply(export)
    for batch in (int(b) for b in args.batches.split(",")):
      files = {"LiteRT float32": litert.convert(float32_fn, export.input_shape, batch, False)}
      for mode, label in (("float", "LiteRT low-bit weights"), ("dynamic_int8", "LiteRT dynamic int8")):
        files[label] = litert.convert(litert.lowbit_function(export, mode)[0], export.input_shape, batch,
                                      mode == "dynamic_int8")
      runs = {"XLA plain": lambda x: np.asarray(xla(x)), **{k: litert.interpreter_runner(v) for k, v in files.items()}}
      images = np.asarray(jax.random.normal(jax.random.key(batch), (batch, *export.input_shape)), np.float32)
      for run in runs.values():
        run(images)  # warm-up (and XLA's compile)
      times = {name: [] for name in runs}
      for _ in range(args.repeats):
        for name, run in runs.items():
          start = time.perf_counter()
          run(images)
          times[name].append(time.perf_counter() - start)
      medians = {name: statistics.median(t) for name, t in times.items()}
      for name, median in medians.items():
        size = len(files[name]) if name in files else None
        rows.append({"batch": batch, "path": name, "median_s": median, "bytes": size})
        print(f"batch {batch:>3}  {name:>24}: {1000 * median:8.3f} ms  ({median / medians['LiteRT float32']:.2f}x "
              f"LiteRT float32, {median / medians['XLA plain']:.2f}x XLA)"
              + (f"  {size / 1e6:.3f} MB" if size else ""))
      best = min(("LiteRT low-bit weights", "LiteRT dynamic int8"), key=medians.get)
      summary[f"batch{batch}"] = {
          "best_lowbit": best, "lowbit_vs_litert_float": medians[best] / medians["LiteRT float32"],
          "lowbit_vs_xla_float": medians[best] / medians["XLA plain"],
          "lowbit_size_vs_float": len(files[best]) / len(files["LiteRT float32"])}
  print(json.dumps({"model": export.manifest["model"], "cpu": cpu_name(), "rows": rows, **summary}))


if __name__ == "__main__":
  flags.DEFINE_string("export", None, "An export directory (export.py); default: random latents of --model.")
  flags.DEFINE_string("model", "resnet20", "With no --export: the model (random S3 latents, every stage conv).")
  flags.DEFINE_integer("bits", 3, "With no --export: S3's bit width.")
  flags.DEFINE_integer("image_size", 14, "With no --export: the input size.")
  flags.DEFINE_integer("channels", 1, "With no --export: input channels.")
  flags.DEFINE_string("batches", "1,32", "Comma-separated batch sizes (one LiteRT file each).")
  flags.DEFINE_integer("repeats", 50, "Timed runs per path and batch.")
  app.run(main, flags_parser=parse_flags)
