r"""The 1,797 8x8 scikit-learn digits: a seconds-long run for tests and smoke checks.

  python train.py --config=configs/digits.py --workdir=/tmp/s3_digits

1,437 train / 360 test images (stratified, fixed split), a 3-bit S3 ResNet-8 (the CIFAR ResNet with one
block per stage: 8 quantized convs, two of them 1x1 downsamples).
"""
from s3jax.config import base_config


def get_config():
  c = base_config()
  c.model = "resnet8"
  c.num_classes = 10
  c.batch_size = 64
  c.num_epochs = 5
  c.log_every_steps = 10
  c.checkpoint_every_steps = 50
  c.data.name = "digits"
  c.data.image_size = 8
  c.data.crop_padding = 1
  c.optim.lr = 0.4
  c.optim.schedule = "cosine"
  c.optim.weight_decay = 5e-4
  return c
