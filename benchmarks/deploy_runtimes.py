r"""Low-bit against float on the same runtime: latency, file size and peak RAM of one network on XLA,
LiteRT and ONNX Runtime, on this CPU.

  python benchmarks/deploy_runtimes.py                                  # mlp, resnet20, resnet1d_8, vit_tiny
  python benchmarks/deploy_runtimes.py --model=mlp --batch=1            # one model and batch
  python benchmarks/deploy_runtimes.py --export=/tmp/s3_mlp_export      # a trained export

Random 3-bit S3 latents (or --export's codes), side by side and interleaved, medians after one warm-up:
- XLA float32: the eval program on the decoded weights (passed as arguments): the float network;
- XLA plain: the export's plain path (latents materialized at every call, as the trainer evaluates);
- StableHLO: model.stablehlo (its weights decoded once, at export);
- LiteRT float32, LiteRT low-bit (int4/int8 weights, float activations), LiteRT dynamic int8, LiteRT full
  int8 (the quantized layers' inputs as int8 on 8-bit LSQ grids: the same latents with steps calibrated on
  random inputs, or --export's own if it trained them);
- ONNX float32, ONNX MatMulNBits (4-bit Dense kernels, float compute), ONNX MatMulNBits int8 (int8
  activations, accuracy_level 4).
Peak RAM (with --ram, at the first batch): each variant loads and runs once in a process of its own,
which imports only what it needs (no jax for LiteRT and ONNX Runtime); the growth of its peak resident
set over what the imports left. Prints a table, the CPU (and whether it
has AVX-512 and VNNI), and one JSON line last.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from benchlib import activation_export, cpu_name, initial_variables
from s3jax.cli import parse_flags
from s3jax.deploy import inference, litert, onnx_export, runtimes
from s3jax.deploy.export_format import decode_tree, load, write_export
from s3jax.deploy.manifest import read_manifest, write_manifest
from s3jax.errors import ConfigError
from s3jax.records.eval_program import jit_eval_logits

# The input of each model: the MNIST digits at the demo's 14 px for ResNet-20, 32 frames of 13 MFCCs.
SHAPES = {"mlp": (28, 28, 1), "resnet20": (14, 14, 1), "resnet1d_8": (32, 13), "vit_tiny": (28, 28, 1),
          "mlp_tiny": (8, 8, 1)}
MODELS = ("mlp", "resnet20", "resnet1d_8", "vit_tiny")
XLA = ("XLA float32", "XLA plain", "StableHLO")
LITERT = {"LiteRT float32": ("float", False), "LiteRT low-bit": ("float", True),
          "LiteRT dynamic int8": ("dynamic_int8", True)}
ONNX = {"ONNX float32": None, "ONNX MatMulNBits": "float", "ONNX MatMulNBits int8": "dynamic_int8"}
LOWBIT_LITERT = ("LiteRT low-bit", "LiteRT dynamic int8", "LiteRT full int8")
FULL_INT8 = "LiteRT full int8"


def write_files(model: str, directory: str, batch: int, export_dir=None) -> dict[str, str]:
  """{variant: its file} in `directory`: the export (random S3 latents of `model`, or a copy of
  `export_dir`'s arrays), model.stablehlo, the LiteRT files at `batch` and the ONNX files."""
  if export_dir:  # its arrays and manifest only: the files below are written afresh
    shutil.copytree(export_dir, directory, dirs_exist_ok=True,
                    ignore=lambda _, names: [n for n in names if n.endswith((".stablehlo", ".tflite", ".onnx"))])
    manifest = read_manifest(directory)
    for key in ("stablehlo", "litert", "onnx"):
      manifest.pop(key, None)
    write_manifest(directory, manifest)
  else:
    shape = SHAPES[model]
    _, params, batch_stats = initial_variables(model, 0, flags.FLAGS.bits, "s3", 10, shape=shape)
    spec = {"shape": list(shape), "mean": [0.0] * shape[-1], "std": [1.0] * shape[-1], "pixels": "-"}
    write_export(params, batch_stats, directory, model=model, num_classes=10, step=0, input_spec=spec)
  export = load(directory)
  files = {"StableHLO": inference.export_stablehlo(export)}
  for name, (mode, lowbit) in LITERT.items():
    content = litert.convert(litert.lowbit_function(export, mode, lowbit)[0], export.input_shape, batch,
                             mode == "dynamic_int8")
    files[name] = _write(directory, f"{name}.tflite", content)
  full = export if export.activations.enabled else None
  if full is None and not export_dir:
    full = load(activation_export(export, os.path.join(directory, "activations"), model))
  try:
    if full is not None:
      content = litert.convert(litert.lowbit_function(full, "full_int8")[0], export.input_shape, batch, False)
      files[FULL_INT8] = _write(directory, f"{FULL_INT8}.tflite", content)
  except ConfigError as err:
    print(f"{model or 'export'}: no full int8 row: {err}")
  _, to_onnx = onnx_export._modules()
  float_model = to_onnx(onnx_export.float_function(export), [("batch", *export.input_shape)])
  float_model.ir_version = min(float_model.ir_version, onnx_export.IR_VERSION)
  try:
    onnx_export.checked_session(float_model.SerializeToString(), "float")
    nbits = onnx_export.export_onnx(export)
  except ConfigError as err:
    print(f"{model}: no ONNX rows: {err}")
    return files
  files["ONNX float32"] = _write(directory, "float32.onnx", float_model.SerializeToString())
  files.update({name: nbits for name, mode in ONNX.items() if mode})
  return files


def _write(directory, name, content: bytes) -> str:
  path = os.path.join(directory, name.replace(" ", "_"))
  with open(path, "wb") as f:
    f.write(content)
  return path


def runner(variant: str, directory: str, files: dict):
  """images -> logits (numpy) of `variant`, loaded from its files."""
  if variant in ("XLA float32", "XLA plain"):
    export = load(directory)
    if variant == "XLA plain":
      apply = inference.plain_apply(export)
      return lambda x: np.asarray(apply(x))
    apply = jit_eval_logits(export.create_model())
    variables = jax.device_put({"params": jax.jit(decode_tree)(export.params), "batch_stats": export.batch_stats})
    return lambda x: np.asarray(apply(variables, x))
  if variant == "StableHLO":
    apply = inference.load_stablehlo(directory)
    return lambda x: np.asarray(apply(x))
  with open(files[variant], "rb") as f:
    content = f.read()
  if variant in LITERT or variant == FULL_INT8:
    return runtimes.interpreter_runner(content)
  return runtimes.onnx_runner(runtimes.onnx_session(content, ONNX[variant] or "float"))


# A peak-RAM child: imports what its variant needs (the LiteRT and ONNX runtimes without jax), then
# measures how far loading the file and running one batch raise its peak resident set.
_CHILD = """
import json, sys
variant, directory, files, batch, shape, onnx_mode = json.loads(sys.stdin.read())
if variant.startswith("LiteRT"):
  from s3jax.deploy.runtimes import interpreter_class, interpreter_runner
  interpreter_class()
  load = lambda: interpreter_runner(open(files[variant], "rb").read())
elif variant.startswith("ONNX"):
  import onnx
  from s3jax.deploy.runtimes import onnx_runner, onnx_runtime, onnx_session
  onnx_runtime()
  load = lambda: onnx_runner(onnx_session(open(files[variant], "rb").read(), onnx_mode))
else:
  sys.argv = sys.argv[:1]
  sys.path.insert(0, "benchmarks")
  import deploy_runtimes
  load = lambda: deploy_runtimes.runner(variant, directory, files)
import numpy as np

def rss_kb(field):
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field))

with open("/proc/self/clear_refs", "w") as f:
  f.write("5")  # resets the peak (VmHWM) to the present resident set
before = rss_kb("VmRSS:")
load()(np.zeros((batch, *shape), np.float32))
print(json.dumps((rss_kb("VmHWM:") - before) / 1024))
"""


def peak_ram_mb(variant: str, directory: str, files: dict, batch: int, shape) -> float:
  """MB by which loading and running `variant` once raises a fresh process's peak resident set, over what
  its imports left."""
  spec = json.dumps([variant, directory, files, batch, list(shape), ONNX.get(variant) or "float"])
  result = subprocess.run([sys.executable, "-c", _CHILD], input=spec, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if result.returncode:
    raise RuntimeError(f"{variant}: {result.stderr[-1500:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def measure(model: str, batch: int, args, rows: list) -> dict:
  """Times every variant of `model` at `batch` (and its peak RAM with --ram); the summary of the best
  low-bit LiteRT file against LiteRT float32 and XLA float32."""
  with tempfile.TemporaryDirectory() as directory:
    files = write_files(model, directory, batch, args.export)
    runs = {}
    for name in (*XLA, *LITERT, FULL_INT8, *ONNX):
      if name in files or name in XLA:
        try:
          runs[name] = runner(name, directory, files)
        except RuntimeError as err:  # e.g. XNNPACK refusing a graph at some batch: a finding, not a crash
          print(f"{model:>10} b{batch:<3} {name:>22}: does not load ({' '.join(str(err).split())[:160]})")
    shape = load(directory).input_shape
    images = np.asarray(jax.random.normal(jax.random.key(batch), (batch, *shape)), np.float32)
    for run in runs.values():
      run(images)  # warm-up (and XLA's compile)
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
      for name, run in runs.items():
        start = time.perf_counter()
        run(images)
        times[name].append(time.perf_counter() - start)
    ram = {name: peak_ram_mb(name, directory, files, batch, shape) for name in runs} if args.ram else {}
    med = {name: statistics.median(t) for name, t in times.items()}
    size = {name: os.path.getsize(path) for name, path in files.items()}
  for name in runs:
    rows.append({"model": model, "batch": batch, "variant": name, "median_s": med[name],
                 "bytes": size.get(name), "peak_ram_mb": ram.get(name)})
    vs_litert = f"{med[name] / med['LiteRT float32']:5.2f}x" if "LiteRT float32" in med else "    -"
    print(f"{model:>10} b{batch:<3} {name:>22}: {1000 * med[name]:8.3f} ms  {vs_litert} "
          f"LiteRT f32  {med[name] / med['XLA float32']:5.2f}x XLA f32"
          + (f"  {size[name] / 1e6:7.3f} MB" if name in size else " " * 12)
          + (f"  RAM +{ram[name]:6.1f} MB" if name in ram else ""))
  ratio = lambda a, b, d=med: d[a] / d[b] if a in d and b in d else None
  best = min((v for v in LOWBIT_LITERT if v in med), key=med.get, default=None)
  return {"model": model, "batch": batch, "best_lowbit": best,
          "lowbit_vs_litert_float": ratio(best, "LiteRT float32"),
          "lowbit_vs_xla_float": ratio(best, "XLA float32"),
          "stablehlo_vs_plain": med["StableHLO"] / med["XLA plain"],
          "stablehlo_vs_xla_float": med["StableHLO"] / med["XLA float32"],
          "lowbit_size_vs_float": ratio(best, "LiteRT float32", size),
          "onnx_nbits_vs_onnx_float": ratio("ONNX MatMulNBits int8", "ONNX float32"),
          "onnx_size_vs_float": ratio("ONNX MatMulNBits", "ONNX float32", size)}


def main(argv):
  del argv
  args = flags.FLAGS
  models = [None] if args.export else args.model.split(",")
  batches = [int(b) for b in args.batch.split(",")]
  print(f"{cpu_name()}; S3 {args.bits} bits; median of {args.repeats}; jax {jax.__version__}")
  rows, summaries = [], []
  for model in models:
    for i, batch in enumerate(batches):
      ram = args.ram
      args.ram = ram and i == 0  # peak RAM at the first batch only
      summaries.append(measure(model, batch, args, rows))
      args.ram = ram
  last = summaries[0] if len(summaries) == 1 else {"summaries": summaries}
  print(json.dumps({"cpu": cpu_name(), **last, "rows": rows}))


if __name__ == "__main__":
  flags.DEFINE_string("export", None, "An export directory (export.py); default: random latents of --model.")
  flags.DEFINE_string("model", ",".join(MODELS), f"With no --export: comma-separated models of {list(SHAPES)}.")
  flags.DEFINE_integer("bits", 3, "With no --export: S3's bit width.")
  flags.DEFINE_string("batch", "1,32", "Comma-separated batch sizes.")
  flags.DEFINE_integer("repeats", 50, "Timed runs per variant and batch.")
  flags.DEFINE_bool("ram", True, "Also each variant's peak RAM (a process each), at the first batch.")
  app.run(main, flags_parser=parse_flags)
