r"""Throughput of the ImageNet train input pipeline (decode + RandomResizedCrop + flip + normalise).

  python benchmarks/input_pipeline.py [--images 512] [--batch 64] [--image_size 224]

Writes a synthetic ILSVRC2012 manual_dir of noise JPEGs (375x500, the typical ImageNet size), prepares it
with the real tfds imagenet2012 builder in a temp dir, then times the real `TfdsDataset.train_iterator`.
Noise JPEGs decode slower than photos, so the figure is a conservative bound. Ends with one JSON line.
"""
import argparse
import json
import os
import platform
import tempfile
import time

import tensorflow_datasets as tfds

from s3jax import input_pipeline
from s3jax.config import base_config
from s3jax.synthetic_data import write_synthetic_imagenet


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=512, help="synthetic training JPEGs")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batches", type=int, default=40, help="timed batches after warm-up")
  args = parser.parse_args()

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
    dataset = input_pipeline.create_dataset(config, input_pipeline.ProcessShard(0, 1))
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


if __name__ == "__main__":
  main()
