"""Metric writers: metrics.jsonl and TensorBoard events in the workdir, from process 0 only.

metrics.jsonl holds only values that are a function of the config and seed (no timings), so two runs
of the same config on CPU write identical files. TensorBoard event files are written with the
`tensorboard` package's protos and record writer, without TensorFlow (importing it took seconds a run).
"""
import json
import socket
import struct
import time

import numpy as np
from etils import epath

from s3jax.records.workdir_files import METRICS_FILE, metrics_lines
SUPERSEDED_FILE = "metrics.superseded.jsonl"


def _to_python(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class EventFile:
  """One TensorBoard event file: TFRecord-framed `Event` protos, the first one naming the format."""

  def __init__(self, directory: epath.Path, suffix: str = ""):
    from tensorboard.compat.proto import event_pb2, summary_pb2  # imported here: process 0 only
    from tensorboard.summary.writer.record_writer import RecordWriter
    directory.mkdir(parents=True, exist_ok=True)
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    self.path = directory / f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}{suffix}"
    self._file = self.path.open("wb")
    self._records = RecordWriter(self._file)
    self.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def write(self, event):
    self._records.write(event.SerializeToString())

  def scalars(self, step: int, values: dict):
    summary_pb2 = self._summary_pb2
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=name, simple_value=float(value))
                                         for name, value in values.items()])
    self.write(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    self._file.flush()

  def close(self):
    self._file.close()


def read_events(path: epath.Path) -> list:
  """The `Event` protos of an event file (TFRecord framing: length, its CRC, data, its CRC)."""
  from tensorboard.compat.proto import event_pb2
  data, events, at = path.read_bytes(), [], 0
  while at + 12 <= len(data):
    (length,) = struct.unpack("<Q", data[at:at + 8])
    record = data[at + 12:at + 12 + length]
    if len(record) < length:  # a record cut short by a crash: the events before it stand
      break
    events.append(event_pb2.Event.FromString(record))
    at += 12 + length + 4
  return events


class MetricWriter:
  """Appends `{"step": s, name: value, ...}` lines to metrics.jsonl and scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = epath.Path(workdir) / METRICS_FILE
    self._tb_writer = None

  @property
  def _tb(self) -> EventFile:
    # Opened at the first write, after `truncate_after` has set earlier event files aside.
    if self._tb_writer is None:
      self._tb_writer = EventFile(self.path.parent / "tensorboard")
    return self._tb_writer

  def _records(self) -> list[tuple[dict | None, str]]:
    """(record, line) of each line logged so far; None for a last line cut short by a crash. A corrupt
    line elsewhere is a ConfigError naming it: resuming would hide it."""
    return metrics_lines(self.path, in_progress=True) if self.path.exists() else []

  def _lines(self) -> list[str]:
    return [line for _, line in self._records()]

  def truncate_after(self, step: int):
    """Moves lines logged after `step` (and a last line cut short) to metrics.superseded.jsonl, so a
    resumed run logs each step once and nothing logged is lost. TensorBoard events after `step` are set
    aside the same way."""
    if not self.enabled or not self.path.exists():
      return
    kept, moved = [], []
    for record, line in self._records():
      (kept if record is not None and record["step"] <= step else moved).append(line)
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
    kept = [event for path in files for event in read_events(path)
            if event.step <= step and event.HasField("summary")]
    for path in files:
      path.rename(aside / path.name)
    # Its file sorts before the new run's, so TensorBoard reads it first.
    resumed = EventFile(tb_dir, suffix=".resumed")
    for event in kept:
      resumed.write(event)
    resumed.close()

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
    self._tb.scalars(int(step), {k: v for k, v in record.items() if k != "step" and np.ndim(v) == 0})

  def write_tensorboard(self, step: int, metrics: dict):
    """Scalars for TensorBoard only (per-layer detail that would bloat metrics.jsonl)."""
    if not self.enabled or not metrics:
      return
    self._tb.scalars(int(step), {k: _to_python(v) for k, v in metrics.items()})

  def last_record_with(self, key: str, step: int) -> dict | None:
    """The metrics (without 'step') of the record at `step` holding `key`, if this process logged it."""
    if not self.enabled:
      return None
    for record, _ in reversed(self._records()):
      if record is not None and record["step"] == step and key in record:
        return {k: v for k, v in record.items() if k != "step"}
    return None

  def close(self):
    if self._tb_writer is not None:
      self._tb_writer.close()
