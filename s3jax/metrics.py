"""Metric writers: metrics.jsonl and TensorBoard events in the workdir, from process 0 only.

metrics.jsonl holds only values that are a function of the config and seed (no timings), so two runs
of the same config on CPU write identical files.
"""
import json

import numpy as np
from etils import epath

METRICS_FILE = "metrics.jsonl"


def _to_python(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
  """Appends `{"step": s, name: value, ...}` lines to metrics.jsonl and scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = epath.Path(workdir) / METRICS_FILE
    self._tb = None
    if enabled:
      import tensorflow as tf  # imported lazily: only process 0 pays for it
      self._tf = tf
      self._tb = tf.summary.create_file_writer(str(epath.Path(workdir) / "tensorboard"))

  def _lines(self) -> list[str]:
    return [l for l in self.path.read_text().splitlines() if l.strip()] if self.path.exists() else []

  def truncate_after(self, step: int):
    """Drops lines logged after `step`, so a resumed run does not log the same steps twice."""
    if self.enabled and self.path.exists():
      kept = [l for l in self._lines() if json.loads(l)["step"] <= step]
      self.path.write_text("".join(l + "\n" for l in kept))

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
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of a workdir's metrics.jsonl."""
  text = (epath.Path(workdir) / METRICS_FILE).read_text()
  return [json.loads(line) for line in text.splitlines() if line.strip()]
