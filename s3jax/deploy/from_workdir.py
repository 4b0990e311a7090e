"""From a training workdir to a deployed model, and evaluations of either: what export.py and evaluate.py run.

- `export_checkpoint(workdir, output)`: a workdir's checkpoint as an export, verified by loading it back,
  with its StableHLO artifact.
- `evaluate_checkpoint(config, workdir)` and `evaluate_export(config, directory, path)`: top-1/top-5/loss
  on the eval split, without training.

Neither builds the optimizer, and an export never builds the data: the model's input and classes come
from the workdir's model_input.json (written at training time), and only the parameters and BatchNorm
statistics are restored, onto one device, so a run trained on any number of devices exports and
evaluates anywhere.
"""
import json
import os
import shutil

import jax

from s3jax import data
from s3jax.deploy import export_format, inference
from s3jax.errors import ConfigError
from s3jax.models import activation_layers
from s3jax.records import checkpoints, workdir_files
from s3jax.records.eval_program import jit_eval_logits
from s3jax.records.resolved import resolve_run
from s3jax.records.variables import abstract_variables_on_one_device

PATHS = ("plain", "shift_add", "stablehlo", "litert", "onnx")


def model_input(config, workdir: str, dataset=None) -> dict:
  """The workdir's model_input.json record; for a run trained before s3jax wrote it, the same from the
  data config (`dataset`, or one built now)."""
  record = workdir_files.read_model_input(workdir)
  if record is None:
    dataset = dataset or data.create_dataset(config)
    record = {"model": config.model, "num_classes": dataset.num_classes, "input": dataset.input_spec()}
  return record


def restore_variables(config, workdir: str, step: int | None = None, spec: dict | None = None):
  """(model, {'params', 'batch_stats'}, step, model_input) of a workdir's checkpoint (latest, or `step`),
  on the first device. `spec`: its `model_input`, if already read. Raises ConfigError when the checkpoint
  does not fit `config`."""
  directory = os.path.join(workdir, workdir_files.CHECKPOINTS)
  if not os.path.isdir(directory):
    raise ConfigError(f"{workdir} holds no {workdir_files.CHECKPOINTS}/ directory: train there first, or fix "
                      "--workdir.")
  spec = spec or model_input(config, workdir)
  run = resolve_run(config)
  model = run.create_model(spec["num_classes"])
  abstract = abstract_variables_on_one_device(run, model, spec["input"]["shape"])
  store = checkpoints.CheckpointStore(directory, config.keep_checkpoints, read_only=True, identity=run.identity)
  try:
    variables, step = store.restore_variables(abstract, step)
  finally:
    store.close()
  return model, variables, step, spec


def export_checkpoint(workdir: str, output: str, step: int | None = None, stablehlo: bool = True,
                      litert_modes=(), litert_batches=(1,), onnx: bool = False) -> dict:
  """Writes the checkpoint of `workdir` (latest, or `step`) into `output`; returns the manifest. With
  `litert_modes` (of `s3jax.deploy.litert.MODES`), one LiteRT file per mode and batch as well; with
  `onnx`, model.onnx."""
  if litert_modes:
    from s3jax.deploy import litert
    litert.check_modes(litert_modes, litert_batches)
  if onnx:
    from s3jax.deploy import onnx_export
    onnx_export.check_installed()
  if os.path.exists(os.path.join(output, export_format.MANIFEST)):
    raise ConfigError(f"{output} already holds an export; choose another --output, or delete it first.")
  if os.path.isdir(output) and os.listdir(output):
    raise ConfigError(f"{output} is not empty; choose a new or empty --output directory.")
  config = workdir_files.read_config(workdir)
  run = resolve_run(config)
  if "full_int8" in litert_modes:
    litert.check_full_int8(run.activations)
  model, variables, step, spec = restore_variables(config, workdir, step)
  activations = None
  if run.activations.enabled:
    images = jax.ShapeDtypeStruct((1, *spec["input"]["shape"]), jax.numpy.float32)
    activations = {**run.activations.describe(), "layers": list(activation_layers(model, variables, images, train=False))}
  # Written beside `output` and renamed into place only when complete: an export cut short (Ctrl-C, a
  # full disk) leaves nothing that looks like an export, and the same command then succeeds.
  partial = partial_path(output)
  shutil.rmtree(partial, ignore_errors=True)  # left by an export that was cut short
  try:
    export_format.write_export(
        jax.device_get(variables["params"]), jax.device_get(variables["batch_stats"]), partial,
        model=config.model, num_classes=spec["num_classes"], input_spec=spec["input"], step=step,
        training_config=json.loads(config.to_json_best_effort()), activations=activations)
    exported = export_format.load(partial)  # what a user will load, checked now
    if stablehlo:
      inference.export_stablehlo(exported)
    for mode in litert_modes:
      for batch in litert_batches:
        litert.export_litert(exported, mode, batch)
    if onnx:
      onnx_export.export_onnx(exported)
    if os.path.isdir(output):
      os.rmdir(output)  # empty (checked above)
    os.rename(partial, output)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  return export_format.read_manifest(output)


def partial_path(output: str) -> str:
  """Where an export to `output` is written until it is complete."""
  output = os.path.abspath(output)
  return os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.partial")


def progress_note(workdir: str, step: int) -> str:
  """'' for a run that is not training; else a sentence saying that `step` is not its final state."""
  status = workdir_files.training_status(workdir)
  return f"note: {status}; this is its checkpoint at step {step}, not its final state." if status else ""


def checkpoint_apply(config, workdir: str, step: int | None = None, spec: dict | None = None):
  """(images -> logits, step, model_input): the trainer's eval computation on a workdir's checkpoint."""
  model, variables, step, spec = restore_variables(config, workdir, step, spec)
  apply = jit_eval_logits(model)
  return (lambda images: apply(variables, images)), step, spec


def _check_fits(config, dataset, input_shape, what: str):
  """Refuses data whose images do not fit the model's input."""
  if list(dataset.image_shape) != list(input_shape):
    raise ConfigError(f"{what} takes images of shape {list(input_shape)}, but {config.data.name} gives "
                      f"{list(dataset.image_shape)}; pass the data config it was trained on.")


def evaluate_checkpoint(config, workdir: str, step: int | None = None) -> tuple[dict, object, int]:
  """(metrics, per-example predictions, step) of a workdir's checkpoint on the eval split. The data is
  checked against the model's input before anything is restored."""
  dataset = data.create_dataset(config)
  spec = model_input(config, workdir, dataset)
  _check_fits(config, dataset, spec["input"]["shape"], f"the checkpoint in {workdir}")
  apply, step, _ = checkpoint_apply(config, workdir, step, spec)
  metrics, predictions = inference.evaluate_apply(apply, dataset)
  return metrics, predictions, step


def export_apply(directory: str, path: str = "plain", mode: str = "dynamic_int8"):
  """images -> logits of an export by one of PATHS (`mode`, for 'litert' and 'onnx': float or dynamic int8
  activations)."""
  if path not in PATHS:
    raise ConfigError(f"--path={path!r} is unknown; use one of {PATHS}.")
  if path == "stablehlo":
    return inference.load_stablehlo(directory)
  if path == "litert":
    from s3jax.deploy import litert
    return litert.litert_apply(directory, mode)
  if path == "onnx":
    from s3jax.deploy import onnx_export
    return onnx_export.onnx_apply(directory, mode)
  loaded = export_format.load(directory)
  return inference.plain_apply(loaded) if path == "plain" else inference.shift_add_apply(loaded)


def evaluate_export(config, directory: str, path: str = "plain", mode: str = "dynamic_int8",
                    dataset=None) -> tuple[dict, object, int]:
  """(metrics, per-example predictions, step) of an export on the eval split of `config`'s data."""
  manifest = export_format.read_manifest(directory)
  dataset = dataset or data.create_dataset(config)
  _check_fits(config, dataset, manifest["input"]["shape"], "the export")
  metrics, predictions = inference.evaluate_apply(export_apply(directory, path, mode), dataset)
  return metrics, predictions, manifest["step"]
