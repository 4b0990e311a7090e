r"""Exports a trained shift network at its bit width: bit-packed codes, float parts, a manifest, StableHLO.

  python export.py --workdir=/tmp/s3_mnist --output=/tmp/s3_mnist_export
  python export.py --workdir=/tmp/s3_mnist --output=/tmp/export_200 --step=200
  python export.py --workdir=/tmp/s3_mnist --output=/tmp/s3_lite --litert=float,dynamic_int8 --litert_batch=1,32 --onnx

Reads the workdir's config.json and its latest checkpoint (or --step), parameters only. The layout is in
docs/export.md; load it back with `s3jax.deploy.export_format.load(DIR)`.
"""
from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (holding config.json and checkpoints/).")
_OUTPUT = flags.DEFINE_string("output", None, "A new or empty directory for the export.")
_STEP = flags.DEFINE_integer("step", None, "The checkpoint step to export (default: the latest).")
_STABLEHLO = flags.DEFINE_bool("stablehlo", True, "Also write model.stablehlo (the plain path, weights baked "
                               "in), which runs with only jax installed.")
_LITERT = flags.DEFINE_list("litert", [], "LiteRT files to add, one per mode and batch: float (float "
                            "activations), dynamic_int8 (int8 activations at run time), full_int8 (the trained "
                            "activation grids as int8: runs with quant.activations=lsq or calibrated); the weights "
                            "as int4/int8 levels. Needs `pip install --no-deps -r requirements-litert.txt`.")
_LITERT_BATCH = flags.DEFINE_list("litert_batch", ["1"], "The batch sizes of the LiteRT files (one file each).")
_ONNX = flags.DEFINE_bool("onnx", False, "Also write model.onnx (any batch), its Dense layers with 4-bit levels "
                          "as MatMulNBits. Needs `pip install --no-deps -r requirements-onnx.txt`.")
flags.mark_flags_as_required(["workdir", "output"])


def _mb(n: int) -> str:
  return f"{n / 1e6:.3f} MB"


def main(argv):
  del argv
  from s3jax.cli import exit_on_interrupt
  from s3jax.deploy.from_workdir import export_checkpoint, progress_note
  from s3jax.errors import ConfigError
  try:
    batches = [int(b) for b in _LITERT_BATCH.value]
  except ValueError:
    raise ConfigError(f"--litert_batch={','.join(_LITERT_BATCH.value)} must list integers, e.g. 1,32.") from None
  with exit_on_interrupt(f"nothing was written to {_OUTPUT.value}; rerun the same command"):
    manifest = export_checkpoint(_WORKDIR.value, _OUTPUT.value, _STEP.value, _STABLEHLO.value, _LITERT.value,
                                 batches, _ONNX.value)
  sizes = manifest["sizes"]
  method = "full precision" if manifest["method"] == "float" else f"{manifest['method']} {manifest['bits']}-bit"
  print(f"exported {manifest['model']} ({method}) at step {manifest['step']} to {_OUTPUT.value}")
  print(f"float32 model {_mb(sizes['float32_bytes'])}  export {_mb(sizes['export_bytes'])}  "
        f"ratio {sizes['ratio']:.2f}x  (array files on disk, .npy headers included: "
        f"{_mb(sizes['files_bytes'])})")
  if note := progress_note(_WORKDIR.value, manifest["step"]):
    print(note)
  if sizes["quantized_weights"]:
    print(f"quantized kernels: {sizes['quantized_weights']:,} weights, "
          f"{_mb(4 * sizes['quantized_weights'])} as float32 -> {_mb(sizes['quantized_bytes'])} packed "
          f"({sizes['quantized_ratio']:.2f}x)")
  for entry in manifest.get("litert", {}).values():
    print(f"LiteRT {entry['mode']} at batch {entry['batch']}: {entry['file']} {_mb(entry['bytes'])}, weights as "
          f"{' and '.join(entry['weight_types']) or 'float32'}")
  if entry := manifest.get("onnx"):
    print(f"ONNX: {entry['file']} {_mb(entry['bytes'])}, {len(entry['matmul_nbits'])} Dense kernels as 4-bit "
          "MatMulNBits")


if __name__ == "__main__":
  from s3jax.cli import run
  run(main, "nothing was written to --output; rerun the same command")
