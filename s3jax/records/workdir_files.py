"""A training workdir's records besides its checkpoints: what train.py writes, and how every other tool
reads them.

  config.json        the config of the latest start; a resume with changed keys keeps the earlier one as
                     config.<step>.json
  in_progress.json   while train.py runs: its host and process id (removed when it ends)
  model_input.json   what inference needs without building the data: the model, its classes and its input
                     (shape, normalisation), written when training starts
  metrics.jsonl      one JSON object per logged step (s3jax.training.metrics writes it)
  train.log          the console log
  checkpoints/       Orbax checkpoints (s3jax.records.checkpoints)
"""
import json
import os
import socket
import time

import ml_collections
from absl import logging
from etils import epath
from flax import traverse_util

from s3jax.config import base_config
from s3jax.errors import ConfigError

CONFIG_FILE = "config.json"
MODEL_INPUT_FILE = "model_input.json"
METRICS_FILE = "metrics.jsonl"
IN_PROGRESS_FILE = "in_progress.json"
CHECKPOINTS = "checkpoints"


def prepare(workdir: str):
  """Creates the workdir; a ConfigError if it cannot be written."""
  path = epath.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".s3jax_write_test"
    probe.write_text("")
    probe.unlink()
  except OSError as err:
    raise ConfigError(f"workdir {workdir!r} is not writable ({err.strerror or err}); pass a --workdir "
                      "you can write to.") from None


def _unset_legacy_zeros(saved):
  """A config.json's values with the 0 that meant "not set" before s3jax 0.4 read as unset (None)."""
  if isinstance(saved, dict):
    saved.update({key: None for key in UNSET_AS_ZERO if saved.get(key) == 0})
  return saved


def _flat(config_json: str) -> dict:
  return traverse_util.flatten_dict(_unset_legacy_zeros(json.loads(config_json)), sep=".")


def config_changes(workdir: str, config) -> str:
  """'key old -> new, ...' between the workdir's config.json and `config` ('' if none or the same)."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return ""
  try:
    before = _flat(path.read_text())
  except (OSError, ValueError):
    return ""
  now = _flat(config.to_json_best_effort())
  keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
  return ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in keys)


def record_config(workdir: str, config, start_step: int, changed: str):
  """Writes config.json once the checkpoint is known to fit. A changed config resumed from a checkpoint
  keeps the earlier file as config.<step>.json, so the record of what each step trained with stays."""
  path = epath.Path(workdir) / CONFIG_FILE
  if changed and path.exists():
    kept, n = epath.Path(workdir) / f"config.{start_step}.json", 1
    while kept.exists():  # changed twice at the same step (no checkpoint in between)
      kept, n = epath.Path(workdir) / f"config.{start_step}.{n}.json", n + 1
    path.rename(kept)
    logging.warning("Config changed at step %d: %s (the earlier config is kept in %s).", start_step,
                    changed, kept)
  path.write_text(config.to_json_best_effort(indent=2, sort_keys=True))


UNSET_AS_ZERO = ("total_steps", "eval_every_steps")


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json); keys added to s3jax since take their
  defaults."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise ConfigError(f"{path} not found: --workdir must be a directory train.py wrote.")
  try:
    saved = json.loads(path.read_text())
  except ValueError as err:
    raise ConfigError(f"{path} is not valid JSON ({err}); pass the training config with --config.") from None
  _unset_legacy_zeros(saved)
  config = base_config()
  try:
    config.update(saved)
  except (TypeError, ValueError) as err:
    raise ConfigError(f"{path} does not fit this s3jax's config ({err}); pass the training config with "
                      "--config.") from None
  return config


def write_model_input(workdir: str, model: str, num_classes: int, input_spec: dict):
  """Records the model's name, classes and input (`input_spec`: shape, mean, std, pixels)."""
  record = {"model": model, "num_classes": int(num_classes), "input": input_spec}
  (epath.Path(workdir) / MODEL_INPUT_FILE).write_text(json.dumps(record, indent=1))


def read_model_input(workdir: str) -> dict | None:
  """`write_model_input`'s record, or None for a workdir trained before s3jax wrote it."""
  path = epath.Path(workdir) / MODEL_INPUT_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError as err:
    raise ConfigError(f"{path} is not valid JSON ({err}); delete it to read the input from the data "
                      "config instead.") from None


def metrics_lines(path: epath.Path, in_progress: bool) -> list[tuple[dict | None, str]]:
  """(record, line) for each line of a metrics.jsonl; record None for a last line cut short (no newline
  after it) while `in_progress`: a run writing it now, or one killed mid-write. Any other line that is not
  a {"step": N, ...} object is a ConfigError naming the file and the line."""
  try:
    text = path.read_text()
  except OSError as err:
    raise ConfigError(f"{path} cannot be read ({err.strerror or err}); check the path and its "
                      "permissions.") from None
  lines, out = text.split("\n"), []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        raise ValueError('not a {"step": N, ...} object')
    except ValueError as err:
      if in_progress and number == len(lines):  # no newline after it: cut short by a write in progress
        out.append((None, line))
        continue
      raise ConfigError(f"{path}, line {number}, is not a metrics record ({err}): {line[:60]!r}; fix or "
                        "delete that line (set the file aside to keep it) and rerun.") from None
    out.append((record, line))
  return out


def read_metrics(workdir: str, in_progress: bool = False) -> list[dict]:
  """All records of a workdir's metrics.jsonl (`metrics_lines`). `in_progress`: the run may be writing it
  now, so a missing file is no records and a last line cut short is left out."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    if in_progress:
      return []
    raise ConfigError(f"{path} not found: --workdir must be a directory train.py wrote.")
  return [record for record, _ in metrics_lines(path, in_progress) if record is not None]


def mark_in_progress(workdir: str):
  """Records that this process is training in `workdir` (until `clear_in_progress`)."""
  record = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
  (epath.Path(workdir) / IN_PROGRESS_FILE).write_text(json.dumps(record))


def clear_in_progress(workdir: str):
  (epath.Path(workdir) / IN_PROGRESS_FILE).unlink(missing_ok=True)


def training_status(workdir: str) -> str:
  """'' when no trainer is recorded in `workdir`; otherwise one sentence on the trainer that wrote
  in_progress.json: still running here, gone, or on another host."""
  path = epath.Path(workdir) / IN_PROGRESS_FILE
  try:
    record = json.loads(path.read_text())
  except (OSError, ValueError):
    return ""
  who = f"pid {record.get('pid')} on {record.get('host')}, since {record.get('since')}"
  if record.get("host") != socket.gethostname():
    return f"the run is marked as training on another host ({who})"
  try:
    os.kill(int(record["pid"]), 0)
  except PermissionError:  # alive, another user's
    pass
  except (OSError, KeyError, ValueError, TypeError):
    return f"the run stopped without ending ({who}); rerun train.py to resume it"
  return f"the run is still training ({who})"
