"""s3jax: S3 (sign-sparse-shift) reparameterization for low-bit shift networks in JAX."""
from s3jax.optim import make_optimizer
from s3jax.quant import (DEFAULT_RESNET_RULES, S3Latent, dense_penalty, dense_weight_penalty,
                         from_codes, init_latent, materialize, materialize_tree, quantized_paths,
                         ste_sign, ste_step, to_codes, to_latents)

__version__ = "0.1.0"
