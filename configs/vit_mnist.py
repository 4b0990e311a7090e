r"""A Vision Transformer with shift weights: a 3-bit S3 `vit_tiny` on the 5,000 shipped MNIST digits.

  python train.py --config=configs/vit_mnist.py --workdir=/tmp/s3_vit
  python train.py --config=configs/vit_mnist.py --workdir=/tmp/fp_vit --config.quant.method=float

vit_tiny: 7x7 patches (16 tokens and a class token), 4 pre-LayerNorm blocks of width 64 with 4 heads and
an MLP of 128. The model's own rules (s3jax.models.vit.QUANT_PATTERNS) quantize every attention projection (query, key, value, out) and both MLP
kernels; the patch embedding and the head stay full precision. No BatchNorm follows those layers, so
each gets a learned per-output-channel scale (quant.scale=learned). RAdam, as transformers want an
adaptive optimizer; the same recipe for every method.
"""
from s3jax.config import base_config


def get_config():
  c = base_config()
  c.model = "vit_tiny"
  c.num_classes = 10
  c.batch_size = 128
  c.num_epochs = 40
  c.log_every_steps = 31
  c.checkpoint_every_steps = 200
  c.data.name = "mnist5k"
  c.data.image_size = 28
  c.data.crop_padding = 2
  c.quant.scale = "learned"
  c.optim.optimizer = "radam"
  c.optim.lr = 6e-3             # 3e-3 at batch 128
  c.optim.schedule = "cosine"
  c.optim.warmup_epochs = 2.0
  c.optim.weight_decay = 1e-4
  return c
