"""Model registry and parameter counts (torchvision's, with BN scale/bias, without running stats)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s3jax.models import MODEL_NAMES, create_model


def count_params(name, num_classes=1000, size=224, channels=3):
  model = create_model(name, num_classes)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, channels)),
                                                train=False))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name,expected", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                           ("resnet50", 25_557_032), ("resnet101", 44_549_160)])
def test_imagenet_parameter_counts_match_torchvision(name, expected):
  assert count_params(name) == expected


def test_cifar_resnet20_parameter_count():
  # He et al. 2016 report 0.27M for ResNet-20; with 1x1 projection shortcuts it is 272,474 here.
  assert count_params("resnet20", 10, 32) == 272_474


def test_cifar_resnet8_parameter_count():
  """One basic block per stage (16/32/64 channels), 1x1 projections where the shape changes."""
  conv = lambda k, i, o: k * k * i * o
  bn = lambda c: 2 * c
  stem = conv(3, 3, 16) + bn(16)
  stage1 = 2 * (conv(3, 16, 16) + bn(16))
  stage2 = conv(3, 16, 32) + conv(3, 32, 32) + conv(1, 16, 32) + 3 * bn(32)
  stage3 = conv(3, 32, 64) + conv(3, 64, 64) + conv(1, 32, 64) + 3 * bn(64)
  assert count_params("resnet8", 10, 32) == stem + stage1 + stage2 + stage3 + 64 * 10 + 10 == 78_042


@pytest.mark.parametrize("size", [28, 32])
def test_cifar_resnets_run_at_small_sizes_and_half_precision(size):
  model = create_model("resnet20", 10, half_precision=True)
  variables = model.init(jax.random.key(0), jnp.zeros((2, size, size, 1)), train=False)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))
  logits, _ = model.apply(variables, jnp.ones((2, size, size, 1)), train=True, mutable=["batch_stats"])
  chex.assert_shape(logits, (2, 10))
  assert logits.dtype == jnp.float32


def test_unknown_model_is_a_clear_error():
  with pytest.raises(ValueError, match="resnet7"):
    create_model("resnet7", 10)
  assert set(MODEL_NAMES) >= {"resnet18", "resnet50", "resnet20", "resnet56"}
