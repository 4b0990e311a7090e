"""Metric writers: metrics.jsonl and TensorBoard events in the workdir, from process 0 only.

metrics.jsonl holds only values that are a function of the config and seed (no timings), so two runs
of the same config on CPU write identical files.
"""
import json

import numpy as np
from etils import epath

from s3jax.workdir import METRICS_FILE
SUPERSEDED_FILE = "metrics.superseded.jsonl"


def _to_python(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
  """Appends `{"step": s, name: value, ...}` lines to metrics.jsonl and scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = epath.Path(workdir) / METRICS_FILE
    self._tb_writer = None
    if enabled:
      import tensorflow as tf  # imported lazily: only process 0 pays for it
      self._tf = tf

  @property
  def _tb(self):
    # Opened at the first write, after `truncate_after` has set earlier event files aside.
    if self._tb_writer is None:
      self._tb_writer = self._tf.summary.create_file_writer(str(self.path.parent / "tensorboard"))
    return self._tb_writer

  def _lines(self) -> list[str]:
    return [l for l in self.path.read_text().splitlines() if l.strip()] if self.path.exists() else []

  def truncate_after(self, step: int):
    """Moves lines logged after `step` (and any cut-short line) to metrics.superseded.jsonl, so a resumed
    run logs each step once and nothing logged is lost. TensorBoard events after `step` are set aside
    the same way."""
    if not self.enabled or not self.path.exists():
      return
    kept, moved = [], []
    for line in self._lines():
      try:
        (kept if json.loads(line)["step"] <= step else moved).append(line)
      except (ValueError, KeyError, TypeError):
        moved.append(line)
    if moved:
      superseded = self.path.parent / SUPERSEDED_FILE
      old = superseded.read_text() if superseded.exists() else ""
      superseded.write_text(old + "".join(l + "\n" for l in moved))
      self.path.write_text("".join(l + "\n" for l in kept))
      self._truncate_tensorboard(step)

  def _truncate_tensorboard(self, step: int):
    """Rewrites the event files keeping events up to `step`; the originals go to tensorboard.superseded/."""
    tb_dir = self.path.parent / "tensorboard"
    files = sorted(p for p in tb_dir.glob("events.out.tfevents.*")) if tb_dir.exists() else []
    if not files:
      return
    aside = self.path.parent / "tensorboard.superseded" / f"before_resume_at_{step}"
    aside.mkdir(parents=True, exist_ok=True)
    kept = []
    for path in files:
      for record in self._tf.data.TFRecordDataset(str(path)):
        event = self._tf.compat.v1.Event.FromString(record.numpy())
        if event.step <= step:
          kept.append(event)
      path.rename(aside / path.name)
    # A writer of raw events; its file sorts before the new run's, so TensorBoard reads it first.
    writer = self._tf.summary.create_file_writer(str(tb_dir), filename_suffix=".resumed")
    writer.close()
    target = sorted(tb_dir.glob("events.out.tfevents.*.resumed"))[-1]
    with self._tf.io.TFRecordWriter(str(target)) as records:
      for event in kept:
        records.write(event.SerializeToString())

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    record = {"step": int(step), **{k: _to_python(v) for k, v in metrics.items()}}
    line = json.dumps(record) + "\n"
    if "://" in str(self.path):  # object stores cannot append: rewrite
      self.path.write_text("".join(l + "\n" for l in self._lines()) + line)
    else:
      with self.path.open("a") as f:
        f.write(line)
    with self._tb.as_default(step=int(step)):
      for name, value in record.items():
        if name != "step" and np.ndim(value) == 0:
          self._tf.summary.scalar(name, value)
    self._tb.flush()

  def write_tensorboard(self, step: int, metrics: dict):
    """Scalars for TensorBoard only (per-layer detail that would bloat metrics.jsonl)."""
    if not self.enabled or not metrics:
      return
    with self._tb.as_default(step=int(step)):
      for name, value in metrics.items():
        self._tf.summary.scalar(name, value)
    self._tb.flush()

  def last_record_with(self, key: str, step: int) -> dict | None:
    """The metrics (without 'step') of the record at `step` holding `key`, if this process logged it."""
    if not self.enabled:
      return None
    for line in reversed(self._lines()):
      record = json.loads(line)
      if record["step"] == step and key in record:
        return {k: v for k, v in record.items() if k != "step"}
    return None

  def close(self):
    if self._tb_writer is not None:
      self._tb_writer.close()
