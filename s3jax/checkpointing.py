"""Orbax checkpoints of the train state: periodic and preemption-aware saves, sharded restore.

Orbax writes each step to a temporary directory and renames it only when complete, so a save cut short
(kill -9, a lost host) is never listed as a checkpoint. A listed checkpoint that cannot be read
(truncated or corrupted files) is moved aside to `<workdir>/checkpoints_unreadable/` and the previous
step is restored instead, with a warning: nothing is deleted.
"""
import time

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from s3jax.errors import ConfigError
from s3jax.quant.tree import path_name


def _shapes(tree) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {path_name(p): tuple(x.shape) for p, x in leaves}


class CheckpointStore:
  """An Orbax CheckpointManager over `directory`. Call `close()` (it waits for async saves) before exit.

  `identity` (JSON, e.g. the quantization method and bit width) is stored with every step; a step whose
  identity differs is refused on restore, since two methods can share one latent structure.
  """

  def __init__(self, directory: str, max_to_keep: int = 3, identity: dict | None = None):
    self.directory = epath.Path(directory).absolute()
    self._max_to_keep = max_to_keep
    self._identity = identity or {}
    self._manager = self._open()

  def _open(self):
    return ocp.CheckpointManager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def _check_same_identity(self, step: int):
    saved = self._manager.metadata(step).custom_metadata or {}
    for key, expected in self._identity.items():
      if key in saved and saved[key] != expected:
        raise ConfigError(
            f"the checkpoint at step {step} in {self.directory} was written with {key} "
            f"{_describe(saved[key])}, not {_describe(expected)}; use a new --workdir or the config it "
            "was trained with.")

  def _check_same_model(self, step: int, metadata, abstract_state):
    """A checkpoint written for another model (or bit width) is a config error, not a crash."""
    for part in ("params", "batch_stats"):
      saved, expected = _shapes(metadata[part]), _shapes(getattr(abstract_state, part))
      if saved != expected:
        diff = sorted(set(saved.items()) ^ set(expected.items()))[0][0]
        raise ConfigError(
            f"the checkpoint at step {step} in {self.directory} was written for a different model "
            f"({part}/{diff}: checkpoint {saved.get(diff)}, config {expected.get(diff)}); use a new "
            "--workdir or the config it was trained with.")

  def restore(self, abstract_state):
    """The newest readable state, in the shardings of `abstract_state` (ShapeDtypeStructs), or None."""
    for step in reversed(self.all_steps()):
      try:
        metadata = self._manager.item_metadata(step).tree
      except Exception as err:  # pylint: disable=broad-except
        self._set_aside(step, err)
        continue
      self._check_same_identity(step)
      self._check_same_model(step, metadata, abstract_state)
      try:
        state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
      except Exception as err:  # pylint: disable=broad-except
        self._set_aside(step, err)
        continue
      logging.info("Restored checkpoint step %d from %s", step, self.directory)
      return state
    return None

  def _set_aside(self, step: int, err: Exception):
    target = self.directory.parent / "checkpoints_unreadable" / f"{step}.{int(time.time())}"
    logging.warning("Checkpoint step %d in %s is unreadable (%s: %s); moving it to %s and trying the "
                    "previous step.", step, self.directory, type(err).__name__, str(err)[:200], target)
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(target)
    multihost_utils.sync_global_devices(f"s3jax_set_aside_{step}")
    self._manager.close()
    self._manager = self._open()

  def save(self, step: int, state) -> bool:
    return self._manager.save(step, args=ocp.args.StandardSave(state), force=True,
                              custom_metadata=self._identity)

  def reached_preemption(self, step: int) -> bool:
    """True on every host at the same step once any host got a preemption notice (multi-host)."""
    return self._manager.reached_preemption(step)

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def _describe(value) -> str:
  if isinstance(value, dict):
    return " ".join(f"{k}={v}" for k, v in value.items())
  return str(value)


def abstract_like(state):
  """ShapeDtypeStructs (with shardings) describing `state`, the target for a sharded restore."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
