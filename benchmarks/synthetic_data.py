"""Small synthetic image trees in the real on-disk layouts (ILSVRC2012 tars, image folders), for tests and
benchmarks/input_pipeline.py; outside the library, which never needs them."""
import io
import os
import tarfile

import numpy as np
from PIL import Image


def _jpeg_bytes(rng, size, color=None, fmt="JPEG") -> bytes:
  h, w = size
  if color is None:
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  else:
    pixels = np.broadcast_to(np.asarray(color, np.uint8), (h, w, 3))
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format=fmt, quality=90)
  return buf.getvalue()


def _add(tar, name, data: bytes):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def val_color(i: int):
  """A distinct solid colour per validation image, so tests can tell images apart after preprocessing."""
  return (30 + 45 * (i % 5), 30 + 45 * (i // 5 % 5), 30 + 45 * (i // 25 % 5))


def write_synthetic_imagenet(manual_dir: str, wnids, per_class: int = 3, num_val: int = 20,
                             size=(48, 64), seed: int = 0):
  """ILSVRC2012_img_train.tar (a tar of <wnid>.tar) and ILSVRC2012_img_val.tar (flat, solid colours)."""
  rng = np.random.default_rng(seed)
  os.makedirs(manual_dir, exist_ok=True)
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as train:
    for wnid in wnids:
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode="w") as inner:
        for i in range(per_class):
          _add(inner, f"{wnid}_{i}.JPEG", _jpeg_bytes(rng, size))
      _add(train, f"{wnid}.tar", buf.getvalue())
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as val:
    for i in range(num_val):
      _add(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", _jpeg_bytes(rng, size, color=val_color(i)))


def write_image_folder(root: str, classes, per_class: int = 4, eval_dir: str = "test", size=(40, 40),
                       seed: int = 0):
  """<root>/train/<class>/*.jpg and <root>/<eval_dir>/<class>/*.png."""
  rng = np.random.default_rng(seed)
  for split, fmt, ext in (("train", "JPEG", "jpg"), (eval_dir, "PNG", "png")):
    for c in classes:
      os.makedirs(os.path.join(root, split, c), exist_ok=True)
      for i in range(per_class):
        with open(os.path.join(root, split, c, f"{c}_{i}.{ext}"), "wb") as f:
          f.write(_jpeg_bytes(rng, size, fmt=fmt))
