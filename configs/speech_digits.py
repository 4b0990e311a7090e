r"""Spoken digits: a 3-bit S3 1-D ResNet on MFCC sequences of the Free Spoken Digit Dataset.

  python train.py --config=configs/speech_digits.py --workdir=/tmp/s3_speech
  python train.py --config=configs/speech_digits.py --workdir=/tmp/fp_speech --config.quant.method=float

The shift network of the S3 authors' spoken-language follow-up (Avila et al., Interspeech 2022) at CPU
scale: 3,000 recordings (6 speakers, 300 per digit) as 32 frames x 13 MFCCs, 2,400 train / 600 test
(stratified, fixed split that mixes speakers: the file holds no speaker ids). resnet1d_8: a 3-wide conv
stem, three stages of one basic block (64/128/256 channels) over time, global average pooling; the
stages' convs are quantized, the stem and head stay full precision, as in the image ResNets.
"""
from s3jax.config import base_config


def get_config():
  c = base_config()
  c.model = "resnet1d_8"
  c.num_classes = 10
  c.batch_size = 64
  c.num_epochs = 30
  c.log_every_steps = 37
  c.checkpoint_every_steps = 370
  c.data.name = "spoken_digits"
  c.data.image_size = 0         # unused: inputs are (32 frames, 13 MFCCs)
  c.data.augment = "none"
  c.optim.lr = 0.2              # 0.05 at batch 64
  c.optim.schedule = "cosine"
  c.optim.warmup_epochs = 1.0
  c.optim.weight_decay = 5e-4
  return c
