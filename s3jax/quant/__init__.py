"""The quantization core: every shift-network method behind one interface. Pure JAX (plus optax for the
penalty); no Flax or trainer imports. Method formulas: docs/METHODS.md.

What users may rely on is listed in `__all__`. The submodules hold the rest, for the trainer and for
those who extend a method: `interface` (Quantizer), `scaled` (Scaled: a float scale and its gradient),
`s3`, `denseshift`, `deepshift` (one method each), `rules` (Rule: which kernels, which method), `tree`
(tree transforms, gradient proxies, role masks), `proxies` (the gradient-proxy protocol), `banks` (many layers' latents in one flat array per field, for the train step), `conversion`
(from a trained float model: nearest levels, fitted scales, BatchNorm folding), `penalty`, `stats` and
`dynamics` (level shares, sizes, sign-flip and low-value rates), `binarizers`, `activations` (activation
quantizers: LSQ, a calibrated step, DeepShift's fixed point).
"""
from s3jax.quant.activations import ActivationQuantizer
from s3jax.quant.binarizers import ste_sign, ste_step
from s3jax.quant.interface import (FULL_PRECISION, FullPrecision, Quantizer, materialize, method_names, project,
                                   quantizer, quantizer_of, to_codes)
from s3jax.quant.scaled import Scaled
from s3jax.quant.options import method_options, quantizer_from_config
from s3jax.quant.s3 import S3Latent, from_codes, init_latent, level_values, num_shift_latents
from s3jax.quant.denseshift import DenseShiftLatent
from s3jax.quant.deepshift import DeepShiftPSLatent, DeepShiftQLatent
from s3jax.quant.rules import Rule, rules_for
from s3jax.quant.tree import (materialize_tree, project_tree, quantized_paths, role_tree,
                              to_latents)
from s3jax.quant.banks import Banked, bank_tree, unbank_tree
from s3jax.quant.conversion import convert_to_latents
from s3jax.quant.penalty import dense_penalty, dense_weight_penalty
from s3jax.quant.stats import storage_bits, weight_statistics
from s3jax.quant.dynamics import weight_dynamics

__all__ = [
    "ActivationQuantizer", "Banked", "DeepShiftPSLatent", "DeepShiftQLatent", "DenseShiftLatent", "FULL_PRECISION", "FullPrecision",
    "Quantizer", "Rule", "S3Latent", "Scaled", "bank_tree", "convert_to_latents", "dense_penalty", "dense_weight_penalty", "from_codes", "init_latent",
    "level_values", "materialize", "materialize_tree", "method_names", "method_options", "num_shift_latents", "project",
    "project_tree", "quantized_paths", "quantizer", "quantizer_from_config", "quantizer_of", "role_tree", "rules_for",
    "ste_sign", "ste_step", "storage_bits", "to_codes", "to_latents", "unbank_tree", "weight_dynamics",
    "weight_statistics",
]
