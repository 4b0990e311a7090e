"""s3jax: low-bit shift networks in JAX: S3 (sign-sparse-shift), DenseShift and DeepShift-Q/PS.

The names below are the library's stable surface; `s3jax.quant` has the whole quantization core. The
packages by capability (each imports only those listed after it):

  s3jax.deploy    an export at the bit width, its inference paths, evaluation of a checkpoint or an export
  s3jax.report    figures and a summary table from training workdirs (deploy and report never import
                  the trainer)
  s3jax.training  the trainer: state, steps, optimizer, metrics, the loop
  s3jax.records   a run's files, checkpoints, variables and eval program: what every tool reads
  s3jax.data      in-memory and tensorflow-datasets input
  s3jax.quant     the methods (pure JAX)       s3jax.models  plain Flax models
  s3jax.config  s3jax.classification  s3jax.errors
"""
from s3jax.quant import (FULL_PRECISION, Quantizer, Rule, S3Latent, convert_to_latents, dense_penalty,
                         dense_weight_penalty, from_codes, init_latent, materialize, materialize_tree, project_tree,
                         quantized_paths, quantizer, quantizer_of, rules_for, ste_sign, ste_step, to_codes, to_latents)
from s3jax.records.resolved import ResolvedRun, resolve_run
from s3jax.training.optim import make_optimizer

__version__ = "0.3.0"

__all__ = [
    "FULL_PRECISION", "Quantizer", "ResolvedRun", "Rule", "S3Latent", "convert_to_latents",
    "dense_penalty", "dense_weight_penalty", "from_codes", "init_latent", "make_optimizer", "materialize",
    "materialize_tree", "project_tree", "quantized_paths", "quantizer", "quantizer_of", "resolve_run", "rules_for",
    "ste_sign", "ste_step", "to_codes", "to_latents",
]
