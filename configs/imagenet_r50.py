r"""resnet50, 3-bit S3 on ImageNet with the paper's recipe (see s3jax.config.imagenet_config).

  python train.py --config=configs/imagenet_r50.py --workdir=$WORKDIR --config.data.manual_dir=$ILSVRC_TARS

manual_dir is needed once, to prepare tfds imagenet2012 (docs/imagenet.md).
Expect (published, top-1 / top-5): FP32 76.00 / 93.00, S3 3-bit 75.75 / 92.80. Full-precision baseline: --config.quant.method=float; other methods: --config.quant.method=denseshift|deepshift_q|deepshift_ps.
"""
from s3jax.config import imagenet_config


def get_config():
  return imagenet_config("resnet50")
