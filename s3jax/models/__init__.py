"""Plain Flax models; S3 enters only through `s3jax.quant.to_latents` / `materialize_tree`."""
from s3jax.models.resnet import MODEL_NAMES, ResNet, create_model
