"""The S3 quantization core: pure JAX (plus optax for the penalty), no Flax or trainer imports."""
from s3jax.quant.binarizers import exact_exp2, ste_sign, ste_step
from s3jax.quant.latent import (INIT_SCHEMES, SUPPORTED_BITS, S3Latent, from_codes, init_latent,
                                level_values, materialize, num_shift_latents, to_codes)
from s3jax.quant.penalty import dense_penalty, dense_weight_penalty
from s3jax.quant.tree import (DEFAULT_RESNET_RULES, latents_with_paths, materialize_tree,
                              quantized_paths, sparse_mask, to_latents)
from s3jax.quant.stats import level_counts, level_names
