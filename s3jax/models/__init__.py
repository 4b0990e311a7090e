"""Plain Flax models; S3 enters only through `s3jax.quant.to_latents` / `materialize_tree`.

- `resnet`: ImageNet and CIFAR ResNets, and 1-D ResNets over time for speech (`resnet1d_*`);
- `vit`: Vision Transformers;
- `mlp`: a multilayer perceptron (the Dense-heavy deployment case);
- `registry`: `create_model(name, ...)` over all of them;
- `quantized_inputs`: quantized layer inputs for any Linen model, without editing it;
- `activation_point`: `ActivationPoint`, a named tensor (a residual summand) activation rules can choose.
"""
from s3jax.models.registry import MODEL_NAMES, create_model, default_quant_patterns, integer_activation_patterns
from s3jax.models.resnet import ResNet
from s3jax.models.vit import ViT
from s3jax.models.mlp import MLP
from s3jax.models.activation_point import ActivationPoint
from s3jax.models.quantized_inputs import QuantizedInputs, activation_layers, quantized_inputs
