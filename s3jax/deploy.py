"""From a training workdir to a deployed model, and evaluations of either: what export.py and evaluate.py run.

- `export_checkpoint(workdir, output)`: a workdir's checkpoint (parameters only) as an export, verified by
  loading it back, with its StableHLO artifact.
- `evaluate_checkpoint(config, workdir)` and `evaluate_export(config, directory, path)`: top-1/top-5/loss
  on the eval split, without training.
"""
import json
import os

import jax
import ml_collections

from s3jax import export as export_format
from s3jax import inference
from s3jax.config import base_config
from s3jax.errors import ConfigError
from s3jax.input_pipeline import create_dataset
from s3jax.steps import eval_logits
from s3jax.train import CONFIG_FILE, restore_for_inference

PATHS = ("plain", "shift_add", "stablehlo")


def workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise ConfigError(f"{path} not found: --workdir must be a directory train.py wrote.")
  try:
    with open(path) as f:
      saved = json.load(f)
  except ValueError as err:
    raise ConfigError(f"{path} is not valid JSON ({err}); pass the training config with --config.") from None
  # Keys added to s3jax after the run was trained take their defaults.
  return ml_collections.ConfigDict(_merged(base_config().to_dict(), saved))


def _merged(defaults: dict, saved: dict) -> dict:
  out = dict(defaults)
  for key, value in saved.items():
    out[key] = (_merged(defaults[key], value) if isinstance(value, dict) and isinstance(defaults.get(key), dict)
                else value)
  return out


def _dataset_for(config):
  dataset = create_dataset(config)
  if not config.num_classes:
    config.num_classes = dataset.num_classes
  return dataset


def export_checkpoint(workdir: str, output: str, step: int | None = None, stablehlo: bool = True) -> dict:
  """Writes the checkpoint of `workdir` (latest, or `step`) into `output`; returns the manifest."""
  if os.path.exists(os.path.join(output, export_format.MANIFEST)):
    raise ConfigError(f"{output} already holds an export; choose another --output, or delete it first.")
  if os.path.isdir(output) and os.listdir(output):
    raise ConfigError(f"{output} is not empty; choose a new or empty --output directory.")
  config = workdir_config(workdir)
  dataset = _dataset_for(config)
  model, params, batch_stats, step = restore_for_inference(config, workdir, dataset.image_shape, step)
  export_format.write_export(
      jax.device_get(params), jax.device_get(batch_stats), output, model=config.model,
      num_classes=config.num_classes, input_spec=dataset.input_spec(), step=step,
      training_config=json.loads(config.to_json_best_effort()))
  exported = export_format.load(output)  # what a user will load, checked now
  if stablehlo:
    inference.export_stablehlo(exported)
  return export_format.read_manifest(output)


def checkpoint_apply(config, workdir: str, image_shape, step: int | None = None):
  """(images -> logits, step): the trainer's eval computation on a workdir's checkpoint."""
  model, params, batch_stats, step = restore_for_inference(config, workdir, image_shape, step)
  apply = jax.jit(lambda p, s, x: eval_logits(model, p, s, x))
  return (lambda images: apply(params, batch_stats, images)), step


def evaluate_checkpoint(config, workdir: str, step: int | None = None) -> tuple[dict, object, int]:
  """(metrics, per-example predictions, step) of a workdir's checkpoint on the eval split."""
  dataset = _dataset_for(config)
  apply, step = checkpoint_apply(config, workdir, dataset.image_shape, step)
  metrics, predictions = inference.evaluate_apply(apply, dataset)
  return metrics, predictions, step


def export_apply(directory: str, path: str = "plain"):
  """images -> logits of an export by one of PATHS."""
  if path not in PATHS:
    raise ConfigError(f"--path={path!r} is unknown; use one of {PATHS}.")
  if path == "stablehlo":
    return inference.load_stablehlo(directory)
  loaded = export_format.load(directory)
  return inference.plain_apply(loaded) if path == "plain" else inference.shift_add_apply(loaded)


def evaluate_export(config, directory: str, path: str = "plain") -> tuple[dict, object, int]:
  """(metrics, per-example predictions, step) of an export on the eval split of `config`'s data."""
  manifest = export_format.read_manifest(directory)
  dataset = _dataset_for(config)
  if list(dataset.image_shape) != list(manifest["input"]["shape"]):
    raise ConfigError(f"the export takes images of shape {manifest['input']['shape']}, but "
                      f"{config.data.name} gives {list(dataset.image_shape)}; pass the data config it "
                      "was trained on.")
  metrics, predictions = inference.evaluate_apply(export_apply(directory, path), dataset)
  return metrics, predictions, manifest["step"]
