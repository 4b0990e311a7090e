"""tensorflow-datasets input: ImageNet (prepared offline from manual_dir), CIFAR-10/100, image folders.

Every process reads only its own shard (`tfds.split_for_jax_process`) and yields per-process numpy
batches of global_batch / process_count examples. Eval is exact: each process pads its shard to the
same number of batches and masks the padding, so every validation example is counted exactly once.
Training order is seeded; a resumed run reseeds with the step it resumes from.
"""
import math
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from s3jax.data import image_folder_eval_split
from s3jax.data.preprocessing import (CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, normalize, pad_crop,
                                     random_resized_crop, resize_and_center_crop, resize_to,
                                     resolve_augmentation)
from s3jax.errors import DataError


IMAGENET_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
SHUFFLE_BUFFER = 16 * 1024


def _split_size(info, split) -> int:
  return info.splits[split].num_examples


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.autotune.enabled = True
  options.threading.private_threadpool_size = max(os.cpu_count() or 1, 1)
  options.threading.max_intra_op_parallelism = 1
  return options


class TfdsDataset:
  """A tfds dataset fed per process; the same interface as `input_pipeline.InMemoryDataset`."""

  def __init__(self, config, shard):
    self.name = config.data.name
    self.global_batch_size = config.batch_size
    self.seed = config.seed
    self.shard = shard
    self.local_batch_size = config.batch_size // shard.count
    self.builder, self.train_split, self.eval_split = _make_builder(config)
    self._tfds_sharding = not isinstance(self.builder, tfds.ImageFolder)
    info = self.builder.info
    self.num_classes = info.features["label"].num_classes
    self._is_cifar = self.name.startswith("cifar")  # 32x32 PNGs: pad-and-crop, not resized crops
    if self._is_cifar:
      self.image_size, self.mean, self.std = 32, CIFAR_MEAN, CIFAR_STD
    else:
      self.image_size, self.mean, self.std = config.data.image_size, IMAGENET_MEAN, IMAGENET_STD
    self.augment, self.crop_padding = resolve_augmentation(config.data, self.image_size, self._is_cifar)
    self.min_scale = config.data.crop_scale_min
    self.image_shape = (self.image_size, self.image_size, 3)
    self.num_train = _split_size(info, self.train_split)
    self.num_test = _split_size(info, self.eval_split)
    if self.num_train < self.global_batch_size:
      raise DataError(f"{self.name} has {self.num_train} training examples, fewer than batch_size="
                      f"{self.global_batch_size}; use a smaller batch_size.")

  @property
  def steps_per_epoch(self) -> int:
    return self.num_train // self.global_batch_size

  def _process_split(self, split, index: int):
    return tfds.split_for_jax_process(split, process_index=index, process_count=self.shard.count)

  def _process_size(self, split, index: int) -> int:
    """How many examples of `split` process `index` reads."""
    if self._tfds_sharding:
      return _split_size(self.builder.info, self._process_split(split, index))
    return len(range(index, _split_size(self.builder.info, split), self.shard.count))

  def _read_process_shard(self, split, shuffle_seed=None):
    """This process's examples of `split`, images left encoded."""
    decoders = {"image": tfds.decode.SkipDecoding()}
    if not self._tfds_sharding:  # ImageFolder has no sub-split API: shard the stream instead.
      ds = self.builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
      return ds.shard(self.shard.count, self.shard.index).with_options(_options())
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, options=_options())
    return self.builder.as_dataset(split=self._process_split(split, self.shard.index), shuffle_files=shuffle_seed is not None,
                                   decoders=decoders, read_config=read_config)

  def _train_preprocess(self, index, example, base_seed):
    crop_seed = tf.stack([base_seed, 2 * index])
    flip_seed = tf.stack([base_seed, 2 * index + 1])
    if self.augment == "inception_crop":
      image = random_resized_crop(example["image"], crop_seed, self.image_size, self.min_scale)
    else:
      image = self._whole_image(example["image"])
      if self.augment == "pad_crop":
        image = pad_crop(image, crop_seed, self.crop_padding)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return {"image": normalize(image, self.mean, self.std), "label": tf.cast(example["label"], tf.int32)}

  def train_iterator(self, start_step: int = 0):
    # Seeds depend on where the run (re)starts, so a resumed run does not replay the same batches.
    base_seed = self.seed * 1_000_003 + start_step
    ds = self._read_process_shard(self.train_split, shuffle_seed=base_seed)
    ds = ds.repeat().shuffle(min(SHUFFLE_BUFFER, self.num_train), seed=base_seed).enumerate()
    ds = ds.map(lambda i, ex: self._train_preprocess(i, ex, tf.constant(base_seed, tf.int64)),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(self.local_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds))

  def _eval_preprocess(self, example):
    if self.augment == "inception_crop":
      image = resize_and_center_crop(example["image"], self.image_size)
    else:
      image = self._whole_image(example["image"])
    return {"image": normalize(image, self.mean, self.std), "label": tf.cast(example["label"], tf.int32),
            "mask": tf.constant(True)}

  def input_spec(self) -> dict:
    """What the model takes: for an export's manifest."""
    if self.augment == "inception_crop":
      resize = f"resized so the short side is {self.image_size}*256/224, centre crop {self.image_size}"
    else:
      resize = f"the whole image at {self.image_size}x{self.image_size}"
    return {"shape": [int(d) for d in self.image_shape], "mean": list(self.mean), "std": list(self.std),
            "pixels": f"RGB in [0, 255], {resize}, then (x - mean) / std per channel"}

  def _whole_image(self, image_bytes):
    if self._is_cifar:
      return tf.io.decode_png(image_bytes, channels=3)
    return resize_to(image_bytes, self.image_size)

  def num_eval_batches(self) -> int:
    """The same on every process: enough batches for the largest process shard."""
    largest = max(self._process_size(self.eval_split, i) for i in range(self.shard.count))
    return math.ceil(largest / self.local_batch_size)

  def eval_batches(self):
    num_batches = self.num_eval_batches()
    padding = num_batches * self.local_batch_size - self._process_size(self.eval_split, self.shard.index)
    ds = self._read_process_shard(self.eval_split).map(self._eval_preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    pad = tf.data.Dataset.from_tensors({
        "image": tf.zeros(self.image_shape, tf.float32), "label": tf.constant(0, tf.int32),
        "mask": tf.constant(False)}).repeat(padding)
    ds = ds.concatenate(pad).batch(self.local_batch_size).prefetch(tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds))


def _make_builder(config):
  """(builder, train split, eval split) for config.data; prepares ImageNet from manual_dir if needed."""
  name, data_dir = config.data.name, config.data.data_dir or None
  if name == "image_folder":
    return _image_folder_builder(config.data.data_dir)
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    if name != "imagenet2012":
      raise DataError(f"{name} is not prepared in {builder.data_dir_root}; prepare it on a machine with "
                      f"internet (`tfds build {name} --data_dir=DIR`) and set data.data_dir=DIR.")
    manual_dir = config.data.manual_dir
    missing = [f for f in IMAGENET_FILES if not manual_dir or not os.path.exists(os.path.join(manual_dir, f))]
    if missing:
      raise DataError(f"imagenet2012 is not prepared in {builder.data_dir_root} and {', '.join(missing)} "
                      f"{'is' if len(missing) == 1 else 'are'} missing from data.manual_dir="
                      f"{manual_dir!r}; put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar there.")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  eval_split = "validation" if "validation" in builder.info.splits else "test"
  return builder, "train", eval_split


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _check_images(folder: str):
  """Every file of an image folder decodes; else a DataError naming the first one that does not."""
  from PIL import Image
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      path = os.path.join(root, name)
      try:
        with Image.open(path) as image:
          image.verify()
      except Exception as err:  # pylint: disable=broad-except  (PIL raises many kinds)
        raise DataError(f"{path} is not a readable image ({type(err).__name__}); remove or replace "
                        "it.") from None


def _image_folder_builder(root: str):
  eval_dir = image_folder_eval_split(root)
  for split in ("train", eval_dir):
    _check_images(os.path.join(root, split))
  builder = tfds.ImageFolder(root)
  for split in ("train", eval_dir):
    if split not in builder.info.splits or not builder.info.splits[split].num_examples:
      raise DataError(f"{os.path.join(root, split)} holds no images; image_folder expects "
                      f"{split}/<class>/*.jpg|png.")
  classes = builder.info.features["label"].num_classes
  if classes < 2:
    raise DataError(f"{os.path.join(root, 'train')} has {classes} class folder(s); a classifier needs "
                    "at least two.")
  return builder, "train", eval_dir
