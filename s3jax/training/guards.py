"""What stops a run early, and how: a preemption notice or Ctrl-C (a checkpoint is saved), and a
non-finite loss (the last good checkpoint is kept)."""
import os
import signal

import jax
from absl import logging

from s3jax.records import checkpoints


class TrainingStopped(RuntimeError):
  """Training stopped early on purpose (non-finite loss); the message says why and what was kept."""


class Preempted(Exception):
  """A preemption notice arrived; a checkpoint of `step` was saved. Rerun the same command to resume."""

  def __init__(self, step: int):
    super().__init__(f"preempted at step {step}; saved a checkpoint there. Rerun the same command to "
                     "resume.")
    self.step = step


class PreemptionWatch:
  """Did a preemption notice (SIGTERM, as on a TPU maintenance event) or a Ctrl-C arrive by this step?

  One process: our own SIGTERM and SIGINT handlers; a second Ctrl-C exits at once, without saving. Many
  processes: Orbax's sync point for SIGTERM, so every host stops at the same step (Ctrl-C keeps Python's
  default there, since only the host it reached would see it).
  """

  def __init__(self, store: checkpoints.CheckpointStore):
    self._store, self._signalled, self._previous = store, False, {}
    signals = (signal.SIGTERM, signal.SIGINT) if jax.process_count() == 1 else ()
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._on_signal)
      except ValueError:  # not the main thread: leave signals alone
        pass

  def _on_signal(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self._signalled:
      os.write(2, b"\nSecond Ctrl-C: exiting now, without saving.\n")
      os._exit(130)
    if signum == signal.SIGINT:
      os.write(2, b"\nCtrl-C: saving a checkpoint at the end of this step (Ctrl-C again to exit now).\n")
    self._signalled = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self._store.reached_preemption(step)
    return self._signalled

  def close(self):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


class NonFiniteGuard:
  """Reads each step's `train/nonfinite` flag one step late, so the check never stalls the device queue."""

  def __init__(self, policy: str, store: checkpoints.CheckpointStore):
    self._policy, self._store, self._pending = policy, store, None
    self.skipped = 0

  def push(self, step: int, metrics):
    self.flush()
    self._pending = (step, metrics["train/nonfinite"])

  def flush(self):
    if self._pending is None:
      return
    step, flag = self._pending
    self._pending = None
    if not int(flag):
      return
    if self._policy == "skip":
      self.skipped += 1
      logging.warning("Non-finite loss or gradient at step %d: step skipped (%d so far).", step,
                      self.skipped)
      return
    raise TrainingStopped(
        f"loss or gradients became non-finite at step {step}; the last good checkpoint "
        f"(step {self._store.latest_step()}) is kept in {self._store.directory}. Lower optim.lr, or "
        "set --config.nonfinite=skip to skip such steps.")
