"""The quantization core: every shift-network method behind one interface. Pure JAX (plus optax for the
penalty); no Flax or trainer imports. Method formulas: docs/METHODS.md."""
from s3jax.quant.binarizers import (exact_exp2, plus_minus_one, ste_round, ste_sign, ste_step,
                                   straight_through)
from s3jax.quant.interface import (SCALES, KernelFans, Quantizer, Scaled, is_latent, kernel_fans,
                                   materialize, method_names, project, quantizer,
                                   quantizer_from_config, quantizer_of, to_codes)
from s3jax.quant.s3 import (INIT_SCHEMES, SUPPORTED_BITS, S3Latent, S3Quantizer, from_codes,
                            init_latent, level_values, num_shift_latents)
from s3jax.quant.denseshift import DenseShiftLatent, DenseShiftQuantizer
from s3jax.quant.deepshift import (DeepShiftPSLatent, DeepShiftPSQuantizer, DeepShiftQLatent,
                                   DeepShiftQQuantizer)
from s3jax.quant.tree import (DEFAULT_RESNET_RULES, exact_pullback, gradient_proxies, latents_with_paths,
                              materialize_tree, path_name, project_tree, proxy_pullback,
                              quantized_paths, role_mask, role_tree, sparse_mask, to_latents)
from s3jax.quant.penalty import dense_penalty, dense_weight_penalty
from s3jax.quant.stats import (level_counts, magnitude_levels, storage_bits, value_name,
                               weight_statistics)
from s3jax.quant.dynamics import tracked_signs, tracked_weights, weight_dynamics
