r"""Trains a shift-network (S3, DenseShift, DeepShift-Q/PS) or full-precision ResNet.

  python train.py --config=configs/mnist.py --workdir=/tmp/s3_mnist
  python train.py --config=configs/imagenet_r50.py --workdir=gs://... --config.batch_size=1024

Any config key can be overridden with --config.<key>=<value>: --config.quant.method=denseshift picks a
method, --config.quant.method=float is the full-precision baseline.
Rerunning the same command resumes from the workdir's latest checkpoint.
"""
import logging as pylogging

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "A file in configs/.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs on CPU/GPU clusters "
    "(TPU pods find their peers without it).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_library_info(record) -> bool:
  """Keeps Orbax's and TensorFlow's INFO chatter out of the training log; warnings still show."""
  return record.levelno >= pylogging.WARNING or not any(
      lib in record.pathname for lib in ("/orbax/", "/tensorflow"))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_quiet_library_info)
  # Imported after flag parsing, so --help stays fast.
  from s3jax.cli import config_value
  from s3jax.errors import ConfigError
  from s3jax.sharding import initialize_distributed
  from s3jax.train import Preempted, TrainingStopped, train_and_evaluate

  config = config_value(_CONFIG)
  initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    metrics = train_and_evaluate(config, _WORKDIR.value)
  except (ConfigError, TrainingStopped) as err:
    raise SystemExit(f"error: {err}") from None
  except Preempted as notice:
    print(notice)
    return
  if "eval/top1" in metrics:
    print(f"final eval/top1 = {metrics['eval/top1']:.4f}  eval/top5 = {metrics['eval/top5']:.4f}")


if __name__ == "__main__":
  from s3jax.cli import parse_flags
  app.run(main, flags_parser=parse_flags)
