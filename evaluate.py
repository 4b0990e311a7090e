r"""Evaluates a checkpoint or an export on the eval split, without training.

  python evaluate.py --workdir=/tmp/s3_mnist                         # its latest checkpoint
  python evaluate.py --workdir=/tmp/s3_mnist --step=200
  python evaluate.py --export=/tmp/s3_mnist_export                   # the plain path
  python evaluate.py --export=/tmp/s3_mnist_export --path=shift_add  # multiplication-free
  python evaluate.py --export=/tmp/s3_mnist_export --path=stablehlo  # the serialised artifact
  python evaluate.py --export=/tmp/s3_lite --path=litert --litert_mode=dynamic_int8  # a LiteRT file
  python evaluate.py --export=/tmp/s3_lite --path=onnx --onnx_mode=float            # model.onnx

The data come from --config (with --config.<key>=<value> overrides, as in train.py), or by default from
the config the model was trained with. Ends with train.py's final line: final eval/top1 = ... (the LiteRT
and ONNX paths add one line after it: the share of examples whose top-1 class agrees with the plain path's).
"""
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "A file in configs/ (default: the training "
                                          "config recorded in the workdir or export).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir: evaluate its checkpoint.")
_EXPORT = flags.DEFINE_string("export", None, "An export directory written by export.py.")
_STEP = flags.DEFINE_integer("step", None, "With --workdir: the checkpoint step (default: the latest).")
_PATH = flags.DEFINE_enum("path", "plain", ["plain", "shift_add", "stablehlo", "litert", "onnx"],
                          "With --export: decoded weights, the multiplication-free path, model.stablehlo, "
                          "a LiteRT file or model.onnx under ONNX Runtime (these two also print the share of "
                          "top-1 classes that agree with the plain path).")
_LITERT_MODE = flags.DEFINE_enum("litert_mode", "dynamic_int8", ["float", "dynamic_int8", "full_int8"],
                                 "With --path=litert: which LiteRT file (its largest batch).")
_ONNX_MODE = flags.DEFINE_enum("onnx_mode", "dynamic_int8", ["float", "dynamic_int8"],
                               "With --path=onnx: MatMulNBits computing in float32 or on int8 activations.")


def main(argv):
  del argv
  if (_WORKDIR.value is None) == (_EXPORT.value is None):
    raise SystemExit("error: give exactly one of --workdir (a checkpoint) or --export (an export directory).")
  if _WORKDIR.value and flags.FLAGS["path"].present:
    raise SystemExit(f"error: --path={_PATH.value} applies to --export; a checkpoint (--workdir) is evaluated "
                     "as the trainer does. Export it first to evaluate another path.")
  if _EXPORT.value and _STEP.value is not None:
    raise SystemExit(f"error: --step={_STEP.value} applies to --workdir; an export holds the one step it "
                     "was exported at (export.py --step=N picks it).")
  import ml_collections

  from s3jax.records import workdir_files
  from s3jax.classification import format_final
  from s3jax.cli import config_value
  from s3jax.deploy import from_workdir as deploy
  from s3jax.deploy.export_format import read_manifest
  if flags.FLAGS["config"].present:
    config = config_value(_CONFIG)
  elif _WORKDIR.value:
    config = workdir_files.read_config(_WORKDIR.value)
  else:
    config = ml_collections.ConfigDict(read_manifest(_EXPORT.value)["training_config"])
  if _WORKDIR.value:
    metrics, _, step = deploy.evaluate_checkpoint(config, _WORKDIR.value, _STEP.value)
    what = f"checkpoint step {step} of {_WORKDIR.value}"
    note = deploy.progress_note(_WORKDIR.value, step)
  else:
    from s3jax import data
    dataset = data.create_dataset(config)
    mode = _ONNX_MODE.value if _PATH.value == "onnx" else _LITERT_MODE.value
    metrics, predictions, step = deploy.evaluate_export(config, _EXPORT.value, _PATH.value, mode, dataset)
    what, note = f"export {_EXPORT.value} (step {step}, {_PATH.value} path)", ""
  print(f"evaluated {what} on {config.data.name}")
  if note:
    print(note)
  print(format_final(metrics))
  if _EXPORT.value and _PATH.value in ("litert", "onnx"):
    plain = deploy.evaluate_export(config, _EXPORT.value, "plain", dataset=dataset)[1]
    agree = int((plain == predictions).sum())
    print(f"agreement with plain: {agree / len(plain):.4f} ({agree} of {len(plain)})")


if __name__ == "__main__":
  from s3jax.cli import run
  run(main, "nothing was evaluated")
