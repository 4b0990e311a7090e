"""`--config.init_from`: a run that starts from a trained float model's weights and BatchNorm statistics,
converted to the config's method (`s3jax.quant.conversion`), with a fresh optimizer at step 0.

`init_from` names one of:
- a float run's workdir (its latest checkpoint), or its `checkpoints/` directory;
- one step of it (`<workdir>/checkpoints/<step>`);
- an Orbax PyTree checkpoint holding {'params', 'batch_stats'} (what `import_weights.py` writes from
  torchvision or timm ResNet weights).
Only a fresh run reads it: a workdir that already holds a checkpoint resumes from that.
"""
import os

import jax
from absl import logging
from etils import epath

from s3jax.errors import ConfigError
from s3jax.models.quantized_inputs import unwrapped
from s3jax.quant.conversion import convert_to_latents
from s3jax.records import checkpoints
from s3jax.records.checkpoint_reading import read_variables
from s3jax.records.resolved import ResolvedRun
from s3jax.records.variables import abstract_variables_on_one_device

_MISMATCH = ("set --config.model (and num_classes) to those of the float model, or check the model's input "
             "shape")


def _is_pytree_checkpoint(path: epath.Path) -> bool:
  return (path / "_METADATA").exists()


def read_float_variables(path: str, abstract: dict) -> tuple[dict, str]:
  """({'params', 'batch_stats'}, what was read) from `path` (see this module), shaped as `abstract`."""
  root = epath.Path(path).absolute()
  if not root.is_dir():
    raise ConfigError(f"init_from={path!r} is not a directory; give a float run's workdir or an Orbax "
                      "checkpoint.")
  managed = root / "checkpoints" if (root / "checkpoints").is_dir() else root
  if any(p.name.isdigit() for p in managed.iterdir()) and not _is_pytree_checkpoint(managed):
    store = checkpoints.CheckpointStore(os.fspath(managed), read_only=True)
    try:
      steps = store.all_steps()
      if not steps:
        raise ConfigError(f"init_from={path!r} holds no finished checkpoint; train the float run first.")
      method = store.identity(steps[-1]).get("quant", {}).get("method", "float")
      if method != "float":
        raise ConfigError(f"init_from={path!r} is a {method} run; it takes a float run's checkpoint "
                          "(trained with --config.quant.method=float).")
      variables, step = store.restore_variables(abstract, fix="give another step as init_from",
                                                mismatch_fix=_MISMATCH)
      where = f"{managed} at step {step}"
    finally:
      store.close()
    return variables, where
  item = root / "default" if (root / "default").is_dir() else root
  if not _is_pytree_checkpoint(item):
    raise ConfigError(f"init_from={path!r} is neither a workdir with checkpoints nor an Orbax checkpoint.")
  variables = read_variables(item, abstract, f"init_from={path!r}",
                             "give a float run's workdir or an Orbax checkpoint", _MISMATCH)
  return variables, os.fspath(item)


def converted_variables(run: ResolvedRun, model, input_shape) -> tuple[dict, dict]:
  """(params, batch_stats) of `run.config.init_from`, converted by `run.rules` (kept as they are where the
  rules are full precision), on the host."""
  abstract = abstract_variables_on_one_device(run.in_full_precision(), unwrapped(model)[0], input_shape)
  variables, where = read_float_variables(run.config.init_from, abstract)
  params, batch_stats = jax.device_get((variables["params"], variables["batch_stats"]))
  logging.info("Starting from the float model in %s, as %s.", where, run.quantizer.describe())
  params, batch_stats = convert_to_latents(params, batch_stats, run.rules,
                                           latent_scale=run.config.quant.convert_latent_scale,
                                           log=lambda line: logging.info("  converted %s", line))
  return jax.device_get((params, batch_stats))
