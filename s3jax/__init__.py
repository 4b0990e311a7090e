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
import importlib
from typing import TYPE_CHECKING

__version__ = "0.3.0"

__all__ = [
    "ActivationPoint", "ActivationQuantizer", "FULL_PRECISION", "QuantizedInputs", "Quantizer", "ResolvedRun", "Rule",
    "S3Latent", "activation_layers", "calibrated_variables", "convert_to_latents", "dense_penalty",
    "dense_weight_penalty", "from_codes", "init_latent", "make_optimizer", "materialize", "materialize_tree",
    "project_tree", "quantize_nnx_inputs", "quantized_inputs", "quantized_paths", "quantizer", "quantizer_of",
    "resolve_run", "rules_for", "ste_sign", "ste_step", "to_codes", "to_latents",
]
# Where each of those names lives. They are imported on first use, so that `import s3jax.cli` (every
# tool's first line) does not wait seconds for jax: a tool's --help answers at once, and its Ctrl-C
# handler is in place before jax is imported.
_HOMES = {**dict.fromkeys(__all__, "s3jax.quant"), "ResolvedRun": "s3jax.records.resolved",
          "resolve_run": "s3jax.records.resolved", "make_optimizer": "s3jax.training.optim",
          **dict.fromkeys(("QuantizedInputs", "activation_layers", "calibrated_variables", "quantize_nnx_inputs",
                           "quantized_inputs"), "s3jax.models.quantized_inputs"),
          "ActivationPoint": "s3jax.models.activation_point"}
_PACKAGES = ("classification", "cli", "config", "data", "deploy", "errors", "models", "quant", "records", "report",
             "training")


def __getattr__(name):
  if name in _HOMES:
    value = getattr(importlib.import_module(_HOMES[name]), name)
  elif name in _PACKAGES:
    value = importlib.import_module(f"{__name__}.{name}")
  else:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  globals()[name] = value
  return value


def __dir__():
  return sorted({*globals(), *_HOMES, *_PACKAGES})


if TYPE_CHECKING:  # the same names, for static readers (the API reference, type checkers)
  from s3jax.models.activation_point import ActivationPoint
  from s3jax.models.quantized_inputs import (QuantizedInputs, activation_layers, calibrated_variables,
                                             quantize_nnx_inputs, quantized_inputs)
  from s3jax.quant import (FULL_PRECISION, ActivationQuantizer, Quantizer, Rule, S3Latent, convert_to_latents, dense_penalty,
                           dense_weight_penalty, from_codes, init_latent, materialize, materialize_tree,
                           project_tree, quantized_paths, quantizer, quantizer_of, rules_for, ste_sign, ste_step,
                           to_codes, to_latents)
  from s3jax.records.resolved import ResolvedRun, resolve_run
  from s3jax.training.optim import make_optimizer
