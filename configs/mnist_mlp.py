r"""The Dense-heavy deployment case: a 3-bit S3 784-1024-1024-1024-10 MLP on the 5,000 shipped MNIST digits.

  python train.py --config=configs/mnist_mlp.py --workdir=/tmp/s3_mlp
  python export.py --workdir=/tmp/s3_mlp --output=/tmp/s3_mlp_export --litert=float,dynamic_int8 --onnx
  python benchmarks/deploy_runtimes.py --export=/tmp/s3_mlp_export --batch=1

s3jax.models.mlp: three hidden Dense layers of 1024 (no bias, BatchNorm, ReLU), 2.9M quantized weights;
the 10-way head stays float. At batch 1 reading the weights dominates, as in token-by-token decoding, so
this is where low-bit weights pay most on a CPU (docs/PERFORMANCE.md). configs/mnist.py's recipe (SGD,
cosine, one warm-up epoch, weight decay 5e-4) for 10 epochs at lr 0.1, evaluated every other epoch.
"""
from s3jax.config import mnist_config


def get_config():
  c = mnist_config()
  c.model = "mlp"
  c.num_epochs = 10
  c.optim.lr = 0.1
  c.eval_every_steps = 62       # every other epoch (31 steps each)
  c.checkpoint_every_steps = 310  # at the end
  return c
