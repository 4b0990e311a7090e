"""The model registry: `config.model` names one of MODEL_NAMES."""
import jax.numpy as jnp

from s3jax.errors import ConfigError
from s3jax.models import mlp, resnet, vit

MODEL_NAMES = resnet.RESNET_NAMES + tuple(vit.VITS) + tuple(mlp.MLPS)


# (names, builder, the kernels its runs quantize by default, its integer activation patterns or None) of each
# model family. An MLP's layer inputs are already every tensor between its quantized layers; a ViT's
# attention multiplies activations by activations, which no pattern makes integer.
_FAMILIES = ((resnet.RESNET_NAMES, resnet.resnet, resnet.QUANT_PATTERNS, resnet.INTEGER_ACTIVATION_PATTERNS),
             (tuple(vit.VITS), vit.vit, vit.QUANT_PATTERNS, None),
             (tuple(mlp.MLPS), mlp.mlp, mlp.QUANT_PATTERNS, mlp.QUANT_PATTERNS))


def _family(name: str):
  """(builder, default quant patterns, integer activation patterns) of model `name`; a ConfigError naming
  the models if it is unknown."""
  for names, *family in _FAMILIES:
    if name in names:
      return family
  raise ConfigError(f"model={name!r} is unknown; use one of {MODEL_NAMES}.")


def create_model(name: str, num_classes: int, half_precision: bool = False):
  """The Flax module `name` with `num_classes` outputs. half_precision computes in bfloat16 while params
  (and S3 latents) stay float32."""
  build, _, _ = _family(name)
  return build(name, num_classes, jnp.bfloat16 if half_precision else jnp.float32)


def default_quant_patterns(name: str) -> tuple[str, ...]:
  """The kernels a run of model `name` quantizes when `quant.rules` is empty: regexes on param paths
  (`s3jax.quant.Rule`), owned by the model's module."""
  return _family(name)[1]


def integer_activation_patterns(name: str) -> tuple[str, ...]:
  """The activation rules of `quant.activation_points=integer` for model `name`: regexes on kernel paths and
  `ActivationPoint` paths that put every tensor between its quantized layers on a grid, so that an int8
  deployment computes in int8 throughout (`--litert=full_int8`). A ConfigError for a model without them."""
  patterns = _family(name)[2]
  if patterns is None:
    raise ConfigError(f"quant.activation_points='integer' is not defined for model={name!r} (its attention "
                      "multiplies activations by activations); use quant.activation_points='layers'.")
  return patterns
