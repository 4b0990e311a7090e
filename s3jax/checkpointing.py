"""Orbax checkpoints of the train state: periodic and preemption-aware saves, sharded restore."""
import os

import jax
import orbax.checkpoint as ocp
from absl import logging


class CheckpointStore:
  """An Orbax CheckpointManager over `<workdir>/checkpoints`.

  Saves are async: call `wait_until_finished()` (or `close()`) before exiting. Orbax writes each step to a
  temporary directory and renames it when complete, so a half-written step is never listed as a checkpoint.
  """

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state):
    """The latest state, restored into the shardings of `abstract_state` (ShapeDtypeStructs), or None."""
    step = self.latest_step()
    if step is None:
      return None
    logging.info("Restoring checkpoint step %d from %s", step, self.directory)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def save(self, step: int, state, force: bool = False) -> bool:
    return self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def reached_preemption(self, step: int) -> bool:
    return self._manager.reached_preemption(step)

  def wait_until_finished(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


def abstract_like(state):
  """ShapeDtypeStructs (with shardings) describing `state`, the target for a sharded restore."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
