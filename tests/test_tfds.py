"""tensorflow-datasets input on the real builders: a synthetic ILSVRC2012 manual_dir and an image folder."""
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from helpers import REPO, load_config
from s3jax import data
from s3jax.errors import DataError
from s3jax.records.workdir_files import read_metrics
from s3jax.deploy.from_workdir import export_checkpoint
from s3jax.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, random_resized_crop, resize_and_center_crop
from s3jax.training.loop import train_and_evaluate

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from synthetic_data import val_color, write_image_folder, write_synthetic_imagenet  # noqa: E402

NUM_VAL = 20


@pytest.fixture(scope="module")
def imagenet_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("imagenet")
  labels = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
  wnids = [line.strip() for line in open(labels)][:4]
  write_synthetic_imagenet(str(root / "manual"), wnids, per_class=3, num_val=NUM_VAL)
  return str(root / "manual"), str(root / "tfds")


def tiny_imagenet(imagenet_dirs, **overrides):
  manual, data_dir = imagenet_dirs
  base = {"data.manual_dir": manual, "data.data_dir": data_dir, "data.image_size": 32, "batch_size": 8,
          "total_steps": 2, "eval_every_steps": 2, "log_every_steps": 1, "model": "resnet8"}
  # ResNet-18's recipe (the same input pipeline and trainer as ResNet-50's) on a ResNet-8, at a fraction of
  # the compile time: this is about the data. Every config's own model is built in test_train.
  return load_config("imagenet_r18", **{**base, **overrides})


@pytest.mark.slow
def test_synthetic_imagenet_prepares_and_trains_end_to_end(imagenet_dirs, tmp_path):
  final = train_and_evaluate(tiny_imagenet(imagenet_dirs), str(tmp_path))
  records = read_metrics(str(tmp_path))
  assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
  evals = [r for r in records if "eval/top1" in r]
  assert len(evals) == 1 and evals[0]["step"] == 2
  assert 0.0 <= final["eval/top1"] <= final["eval/top5"] <= 1.0
  assert np.isfinite(final["eval/loss"])


def _color_index(image):
  """Which synthetic validation image a preprocessed batch entry shows (by its solid colour)."""
  rgb = (image * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)).reshape(-1, 3).mean(0)
  dists = [np.abs(rgb - np.asarray(val_color(i))).sum() for i in range(NUM_VAL)]
  assert min(dists) < 20, rgb  # colours are 45 apart; JPEG shifts them by a few levels
  return int(np.argmin(dists))


@pytest.mark.slow
def test_eval_sees_every_validation_example_once_across_two_processes(imagenet_dirs):
  config = tiny_imagenet(imagenet_dirs, batch_size=6)
  seen, labels_seen = [], []
  batch_counts = []
  for index in range(2):
    dataset = data.create_dataset(config, data.ProcessShard(index, 2))
    batches = list(dataset.eval_batches())
    batch_counts.append(len(batches))
    for batch in batches:
      assert batch["image"].shape == (3, 32, 32, 3)
      for image, label, keep in zip(batch["image"], batch["label"], batch["mask"]):
        if keep:
          seen.append(_color_index(image))
          labels_seen.append(int(label))
  assert batch_counts[0] == batch_counts[1]  # processes stay in lockstep
  assert sorted(seen) == list(range(NUM_VAL))
  truth = {}
  for ex in tfds.as_numpy(dataset.builder.as_dataset(split="validation")):
    truth[ex["file_name"].decode()] = int(ex["label"])
  ordered = [truth[f"ILSVRC2012_val_{i + 1:08d}.JPEG"] for i in seen]
  assert labels_seen == ordered


@pytest.mark.slow
def test_train_batches_are_seeded_and_sharded(imagenet_dirs):
  config = tiny_imagenet(imagenet_dirs)
  a = data.create_dataset(config, data.ProcessShard(0, 2))
  b = data.create_dataset(config, data.ProcessShard(0, 2))
  batch_a, batch_b = next(a.train_iterator(0)), next(b.train_iterator(0))
  assert batch_a["image"].shape == (4, 32, 32, 3)  # per-process batch = 8 / 2
  np.testing.assert_array_equal(batch_a["image"], batch_b["image"])
  assert not np.array_equal(next(a.train_iterator(5))["image"], batch_a["image"])


def test_missing_imagenet_files_are_named(tmp_path):
  config = load_config("imagenet_r18", **{"data.manual_dir": str(tmp_path / "nothing_here"),
                                          "data.data_dir": str(tmp_path / "tfds")})
  with pytest.raises(DataError, match="ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar"):
    data.create_dataset(config, data.ProcessShard(0, 1))


def test_unprepared_cifar_is_a_clear_error(tmp_path):
  config = load_config("digits", **{"data.name": "cifar10", "data.data_dir": str(tmp_path)})
  with pytest.raises(DataError, match="tfds build cifar10"):
    data.create_dataset(config, data.ProcessShard(0, 1))


@pytest.mark.slow
def test_image_folder_trains_and_takes_classes_from_folders(tmp_path):
  root = str(tmp_path / "folder")
  write_image_folder(root, ["cat", "dog", "emu"], per_class=4, eval_dir="val")
  config = load_config("digits", **{"data.name": "image_folder", "data.data_dir": root,
                                    "data.image_size": 32, "num_classes": 0, "batch_size": 8,
                                    "data.crop_padding": 0,
                                    "total_steps": 3, "eval_every_steps": 3})
  dataset = data.create_dataset(config, data.ProcessShard(0, 1))
  assert dataset.num_classes == 3 and dataset.num_train == 12 and dataset.num_test == 12
  assert dataset.augment == "pad_crop" and dataset.crop_padding == 4  # 32 px: no 9 px resized crops
  final = train_and_evaluate(config, str(tmp_path / "work"))
  assert "eval/top1" in final and "eval/top5" not in final  # top-5 of 3 classes means nothing
  assert [r["step"] for r in read_metrics(str(tmp_path / "work")) if "eval/top1" in r] == [3]
  # Export needs neither the data nor num_classes in the config: the run recorded its model's input.
  shutil.rmtree(root)
  manifest = export_checkpoint(str(tmp_path / "work"), str(tmp_path / "export"), stablehlo=False)
  assert manifest["num_classes"] == 3 and manifest["input"]["shape"] == [32, 32, 3]
  assert manifest["input"]["mean"] == list(IMAGENET_MEAN)


def _folder_config(root, **overrides):
  return load_config("digits", **{"data.name": "image_folder", "data.data_dir": root,
                                  "data.image_size": 32, "num_classes": 0, "batch_size": 4,
                                  "data.crop_padding": 0, **overrides})


def test_image_folder_problems_are_named(tmp_path):
  shard = data.ProcessShard(0, 1)
  one = str(tmp_path / "one")
  write_image_folder(one, ["cat"], per_class=4)
  with pytest.raises(DataError, match="has 1 class folder"):
    data.create_dataset(_folder_config(one), shard)
  empty = str(tmp_path / "empty")
  write_image_folder(empty, ["cat", "dog"], per_class=4)
  shutil.rmtree(os.path.join(empty, "test"))
  os.makedirs(os.path.join(empty, "test", "cat"))
  with pytest.raises(DataError, match="test holds no images"):
    data.create_dataset(_folder_config(empty), shard)
  corrupt = str(tmp_path / "corrupt")
  write_image_folder(corrupt, ["cat", "dog"], per_class=4)
  bad = os.path.join(corrupt, "train", "dog", "dog_2.jpg")
  with open(bad, "wb") as f:
    f.write(b"\x89PNG not really an image")
  with pytest.raises(DataError, match=f"{bad} is not a readable image"):
    data.create_dataset(_folder_config(corrupt), shard)


def test_augmentation_keys_that_would_do_nothing_are_errors(tmp_path):
  shard = data.ProcessShard(0, 1)
  root = str(tmp_path / "folder")
  write_image_folder(root, ["cat", "dog"], per_class=4)
  big = _folder_config(root, **{"data.image_size": 96})
  assert data.create_dataset(big, shard).augment == "inception_crop"
  with pytest.raises(DataError, match="data.crop_padding=2 has no effect with data.augment='inception_crop'"):
    data.create_dataset(_folder_config(root, **{"data.image_size": 96, "data.crop_padding": 2}),
                                  shard)
  with pytest.raises(DataError, match="crop_scale_min has no effect"):
    data.create_dataset(_folder_config(root, **{"data.crop_scale_min": 0.5}), shard)
  with pytest.raises(ValueError, match="does not apply to digits"):
    data.create_dataset(load_config("digits", **{"data.augment": "inception_crop"}), shard)


def _encode(image):
  return tf.io.encode_jpeg(tf.constant(image, tf.uint8), quality=100)


def test_random_resized_crop_and_center_crop_geometry():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
  out = random_resized_crop(_encode(image), tf.constant([1, 2], tf.int64), 24)
  assert out.shape == (24, 24, 3)
  # A wide image: green centre square between red and blue side bands; the centre crop sees only green.
  wide = np.zeros((64, 192, 3), np.uint8)
  wide[:, :64] = (255, 0, 0)
  wide[:, 64:128] = (0, 255, 0)
  wide[:, 128:] = (0, 0, 255)
  crop = resize_and_center_crop(_encode(wide), 56).numpy()
  assert crop.shape == (56, 56, 3)
  np.testing.assert_allclose(crop.reshape(-1, 3).mean(0), (0, 255, 0), atol=8)
