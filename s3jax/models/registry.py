"""The model registry: `config.model` names one of MODEL_NAMES."""
import jax.numpy as jnp

from s3jax.errors import ConfigError
from s3jax.models import resnet as resnets
from s3jax.models import vit as vits
from s3jax.models.resnet import RESNET_NAMES, resnet
from s3jax.models.vit import VITS, vit

MODEL_NAMES = RESNET_NAMES + tuple(VITS)


def create_model(name: str, num_classes: int, half_precision: bool = False):
  """The Flax module `name` with `num_classes` outputs. half_precision computes in bfloat16 while params
  (and S3 latents) stay float32."""
  dtype = jnp.bfloat16 if half_precision else jnp.float32
  if name in RESNET_NAMES:
    return resnet(name, num_classes, dtype)
  if name in VITS:
    return vit(name, num_classes, dtype)
  raise ConfigError(f"model={name!r} is unknown; use one of {MODEL_NAMES}.")


def default_quant_patterns(name: str) -> tuple[str, ...]:
  """The kernels a run of model `name` quantizes when `quant.rules` is empty: regexes on param paths
  (`s3jax.quant.Rule`), owned by the model's module."""
  if name in RESNET_NAMES:
    return resnets.QUANT_PATTERNS
  if name in VITS:
    return vits.QUANT_PATTERNS
  raise ConfigError(f"model={name!r} is unknown; use one of {MODEL_NAMES}.")
