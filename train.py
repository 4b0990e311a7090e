r"""Trains a shift-network (S3, DenseShift, DeepShift-Q/PS) or full-precision ResNet.

  python train.py --config=configs/mnist.py --workdir=/tmp/s3_mnist
  python train.py --config=configs/imagenet_r50.py --workdir=gs://... --config.batch_size=1024

Any config key can be overridden with --config.<key>=<value>: --config.quant.method=denseshift picks a
method, --config.quant.method=float is the full-precision baseline.
Rerunning the same command resumes from the workdir's latest checkpoint.
"""
import logging as pylogging
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from s3jax.cli import quiet_library_info

_CONFIG = config_flags.DEFINE_config_file("config", None, "A file in configs/.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs on CPU/GPU clusters "
    "(TPU pods find their peers without it).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 300, "Seconds a multi-process start waits for all its peers before it fails.")
flags.mark_flags_as_required(["config", "workdir"])


def _not_logged(line: str, level: int = pylogging.INFO):
  del line, level  # processes other than 0 keep no train.log


def _log_to_workdir(workdir: str):
  """The console log also goes to <workdir>/train.log (appended, so a resumed run adds to it). Returns
  `record(line, level)`, which puts a line the console shows by itself (the final, preempted and error
  lines) into train.log too."""
  try:
    os.makedirs(workdir, exist_ok=True)
    handler = pylogging.FileHandler(os.path.join(workdir, "train.log"))
  except OSError:
    return _not_logged  # the trainer reports an unwritable workdir, with what to do
  handler.setFormatter(logging.PythonFormatter())
  handler.addFilter(quiet_library_info)
  pylogging.getLogger().addHandler(handler)

  def record(line: str, level: int = pylogging.INFO):
    caller = sys._getframe(1).f_lineno  # pylint: disable=protected-access
    handler.handle(pylogging.LogRecord("s3jax", level, __file__, caller, line, None, None))

  return record


def main(argv):
  del argv
  # Imported after flag parsing, so --help stays fast.
  from s3jax.cli import config_value, exit_with_error_line
  from s3jax.config import validate_config
  from s3jax.errors import CheckpointSaveError, ConfigError

  config = config_value(_CONFIG)
  try:
    validate_config(config)  # its plain values, before jax loads: a bad value costs a second, not several
  except ConfigError as err:
    if _PROCESS_ID.value in (None, 0):  # before jax, the process index is the flag's
      _log_to_workdir(_WORKDIR.value)(f"error: {err}", pylogging.ERROR)
    raise SystemExit(f"error: {err}") from None
  from s3jax.classification import format_final
  from s3jax.training.guards import Preempted, TrainingStopped
  from s3jax.training.loop import train_and_evaluate
  from s3jax.training.sharding import initialize_distributed

  process = initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                   _DISTRIBUTED_TIMEOUT.value)
  if process == 0:
    record = _log_to_workdir(_WORKDIR.value)
  else:  # one training log is enough: the other processes print only warnings and errors
    logging.set_verbosity(logging.WARNING)
    record = _not_logged
  try:
    metrics = train_and_evaluate(config, _WORKDIR.value)
  except (ConfigError, TrainingStopped) as err:
    record(f"error: {err}", pylogging.ERROR)
    raise SystemExit(f"error: {err}") from None
  except CheckpointSaveError as err:
    logging.error("%s", err)
    exit_with_error_line(str(err))
  except Preempted as notice:
    record(str(notice))
    print(notice)
    return
  if "eval/top1" in metrics:
    record(format_final(metrics))
    print(format_final(metrics))


if __name__ == "__main__":
  from s3jax.cli import run
  run(main)
