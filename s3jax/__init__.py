"""s3jax: low-bit shift networks in JAX: S3 (sign-sparse-shift), DenseShift and DeepShift-Q/PS."""
from s3jax.optim import make_optimizer
from s3jax.quant import (DEFAULT_RESNET_RULES, Quantizer, S3Latent, dense_penalty, dense_weight_penalty,
                         from_codes, init_latent, materialize, materialize_tree, project_tree,
                         quantized_paths, quantizer, quantizer_of, ste_sign, ste_step, to_codes,
                         to_latents)

__version__ = "0.2.0"
