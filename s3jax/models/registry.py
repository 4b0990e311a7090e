"""The model registry: `config.model` names one of MODEL_NAMES."""
import jax.numpy as jnp

from s3jax.errors import ConfigError
from s3jax.models import mlp, resnet, vit

MODEL_NAMES = resnet.RESNET_NAMES + tuple(vit.VITS) + tuple(mlp.MLPS)


# (names, builder, the kernels its runs quantize by default) of each model family.
_FAMILIES = ((resnet.RESNET_NAMES, resnet.resnet, resnet.QUANT_PATTERNS), (tuple(vit.VITS), vit.vit, vit.QUANT_PATTERNS),
             (tuple(mlp.MLPS), mlp.mlp, mlp.QUANT_PATTERNS))


def _family(name: str):
  """(builder, default quant patterns) of model `name`; a ConfigError naming the models if it is unknown."""
  for names, build, patterns in _FAMILIES:
    if name in names:
      return build, patterns
  raise ConfigError(f"model={name!r} is unknown; use one of {MODEL_NAMES}.")


def create_model(name: str, num_classes: int, half_precision: bool = False):
  """The Flax module `name` with `num_classes` outputs. half_precision computes in bfloat16 while params
  (and S3 latents) stay float32."""
  build, _ = _family(name)
  return build(name, num_classes, jnp.bfloat16 if half_precision else jnp.float32)


def default_quant_patterns(name: str) -> tuple[str, ...]:
  """The kernels a run of model `name` quantizes when `quant.rules` is empty: regexes on param paths
  (`s3jax.quant.Rule`), owned by the model's module."""
  return _family(name)[1]
