"""TensorBoard events written without TensorFlow, read back by TensorFlow itself (an independent reader)."""
import json
import os

import numpy as np

from s3jax.training.metrics import MetricWriter, read_events


def _read_with_tensorflow(directory):
  import tensorflow as tf
  scalars = []
  for name in sorted(os.listdir(directory)):
    for record in tf.data.TFRecordDataset(os.path.join(directory, name)):  # checks every record's CRCs
      event = tf.compat.v1.Event.FromString(record.numpy())
      scalars += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
  return scalars


def test_scalars_reach_tensorboard_files_and_metrics_jsonl(tmp_path):
  writer = MetricWriter(str(tmp_path))
  writer.write(5, {"train/loss": np.float32(0.25), "train/top1": 0.5, "quant/shares": [0.5, 0.5]})
  writer.write_tensorboard(5, {"layers/conv1/flips": np.float32(0.125)})
  writer.write(10, {"train/loss": 0.125})
  writer.close()
  assert [json.loads(l) for l in open(tmp_path / "metrics.jsonl")] == [
      {"step": 5, "train/loss": 0.25, "train/top1": 0.5, "quant/shares": [0.5, 0.5]},
      {"step": 10, "train/loss": 0.125}]
  assert _read_with_tensorflow(tmp_path / "tensorboard") == [
      (5, "train/loss", 0.25), (5, "train/top1", 0.5), (5, "layers/conv1/flips", 0.125), (10, "train/loss", 0.125)]


def test_a_resume_keeps_events_up_to_its_step_and_a_cut_short_record_is_dropped(tmp_path):
  writer = MetricWriter(str(tmp_path))
  for step in (1, 2, 3):
    writer.write(step, {"train/loss": float(step)})
  writer.close()
  (events,) = (tmp_path / "tensorboard").iterdir()
  data = events.read_bytes()
  events.write_bytes(data[:-5])  # a crash in the middle of the last record
  assert [e.step for e in read_events(events) if e.HasField("summary")] == [1, 2]

  resumed = MetricWriter(str(tmp_path))
  resumed.truncate_after(1)
  resumed.write(2, {"train/loss": 20.0})
  resumed.close()
  assert _read_with_tensorflow(tmp_path / "tensorboard") == [(1, "train/loss", 1.0), (2, "train/loss", 20.0)]
  assert os.listdir(tmp_path / "tensorboard.superseded" / "before_resume_at_1") == [events.name]
