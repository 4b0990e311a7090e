r"""resnet18, 3-bit S3 on ImageNet with the paper's recipe (see s3jax.config.imagenet_config).

  python train.py --config=configs/imagenet_r18.py --workdir=$WORKDIR --config.data.manual_dir=$ILSVRC_TARS

manual_dir is needed once, to prepare tfds imagenet2012 (docs/imagenet.md).
Expect (published, top-1 / top-5): FP32 69.6 / 89.2, S3 3-bit 69.83 / 89.23. Full-precision baseline: --config.quant.method=float; other methods: --config.quant.method=denseshift|deepshift_q|deepshift_ps.
"""
from s3jax.config import imagenet_config


def get_config():
  return imagenet_config("resnet18")
