r"""Throughput of the ImageNet train input pipeline (decode + RandomResizedCrop + flip + normalise).

  python benchmarks/input_pipeline.py [--images 512] [--batch 64] [--image_size 224]

Writes a synthetic ILSVRC2012 manual_dir of noise JPEGs (375x500, the typical ImageNet size), prepares it
with the real tfds imagenet2012 builder in a temp dir, then times the real `TfdsDataset.train_iterator`.
Noise JPEGs decode slower than photos, so the figure is a conservative bound. Ends with one JSON line.
"""
import json
import os
import platform
import tempfile
import time

import tensorflow_datasets as tfds
from absl import app, flags

from s3jax import data
from s3jax.cli import parse_flags
from s3jax.config import base_config
from synthetic_data import write_synthetic_imagenet


def main(argv):
  del argv
  args = flags.FLAGS

  with tempfile.TemporaryDirectory() as tmp:
    labels = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
    wnids = [line.strip() for line in open(labels)][:8]
    t0 = time.time()
    write_synthetic_imagenet(os.path.join(tmp, "manual"), wnids, per_class=args.images // len(wnids),
                             num_val=8, size=(375, 500))
    config = base_config()
    config.data.manual_dir = os.path.join(tmp, "manual")
    config.data.data_dir = os.path.join(tmp, "tfds")
    config.data.image_size = args.image_size
    config.batch_size = args.batch
    dataset = data.create_dataset(config, data.ProcessShard(0, 1))
    print(f"wrote and prepared {dataset.num_train} JPEGs in {time.time() - t0:.1f}s", flush=True)

    batches = dataset.train_iterator(0)
    for _ in range(5):  # warm-up: thread pools, autotune
      next(batches)
    t0 = time.time()
    for _ in range(args.batches):
      next(batches)
    elapsed = time.time() - t0

  cores = os.cpu_count() or 1
  images_per_s = args.batches * args.batch / elapsed
  print(json.dumps({"images_per_s": round(images_per_s, 1), "cores": cores,
                    "images_per_s_per_core": round(images_per_s / cores, 1),
                    "image_size": args.image_size, "batch": args.batch,
                    "machine": platform.processor() or platform.machine()}))


def _define_flags():
  flags.DEFINE_integer("images", 512, "synthetic training JPEGs")
  flags.DEFINE_integer("batch", 64, "Global batch size.")
  flags.DEFINE_integer("image_size", 224, "Image height and width in pixels.")
  flags.DEFINE_integer("batches", 40, "timed batches after warm-up")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=parse_flags)
