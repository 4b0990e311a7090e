r"""Fine-tune the MNIST demo's float run as a 3-bit S3 network (or any method): conversion, then 3 epochs.

  python train.py --config=configs/mnist.py --workdir=/tmp/fp_mnist --config.quant.method=float
  python train.py --config=configs/mnist_finetune.py --workdir=/tmp/s3_ft
  python train.py --config=configs/mnist_finetune.py --workdir=/tmp/ds_ft --config.quant.method=denseshift

The float model's kernels become the method's nearest levels under a fitted per-channel scale, folded into
the BatchNorms (s3jax.quant.conversion); step 0 logs that converted model's top-1 before any update.
The recipe is the demo's with no warm-up, over 3 epochs. Measured on one seed, 1 epoch from the float run
(98.4%): lr 0.4, 0.1 and 0.02 gave S3 98.2 / 98.1 / 98.1% and DenseShift 98.4 / 98.1 / 98.0%, so the
demo's lr stays. docs/RESULTS.md ("From a float model") has every method at 2-4 bits, 3 seeds.
"""
from s3jax.config import mnist_config


def get_config():
  c = mnist_config()
  c.init_from = "/tmp/fp_mnist"  # the float run of the first command above
  c.num_epochs = 3
  c.optim.warmup_epochs = 0.0
  return c
