r"""ResNet-18, 3-bit S3, ImageNet: the paper's recipe (Li et al., NeurIPS 2021; DESIGN.md §2).

  python train.py --config=configs/imagenet_r18.py --workdir=$WORKDIR \
      --config.data.manual_dir=$ILSVRC_TARS      # only needed once, to prepare imagenet2012

SGD momentum 0.9 (no Nesterov), lr 0.1 at batch 256 scaled linearly, coupled weight decay 1e-4 on every
parameter (latents included), 200 epochs of per-epoch cosine without warm-up, dense penalty 1e-5,
RandomResizedCrop 224 + flip, eval resize 256 / centre crop 224, synced BatchNorm.
Note: the paper's text says "initial learning rate is 1e-3"; the released script (and its README
command) uses 0.1, which is our default.
Published: FP32 69.6 / 89.2, S3 3-bit 69.83 / 89.23 (top-1 / top-5).
Full-precision baseline: add --config.quant.bits=32.
"""
from s3jax.config import base_config


def get_config():
  c = base_config()
  c.model = "resnet18"
  c.num_classes = 1000
  c.batch_size = 256
  c.num_epochs = 200
  c.log_every_steps = 100
  c.eval_every_steps = 0  # once per epoch
  c.checkpoint_every_steps = 2000
  c.data.name = "imagenet2012"
  c.data.image_size = 224
  return c
