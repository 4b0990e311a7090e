"""What the command-line shells share: flag and config errors end in one `error:` line, never a traceback;
libraries' INFO chatter stays out of the log."""
import logging
import sys

from absl import flags


def _last_line(err: BaseException) -> str:
  lines = [l.strip() for l in str(err).strip().splitlines() if l.strip()]
  return lines[-1] if lines else type(err).__name__


def _describe(err: Exception) -> str:
  if isinstance(err, flags.Error):
    return str(err)
  if isinstance(err, (KeyError, AttributeError)):  # ml_collections: a --config.<key> that does not exist
    return f"the config has no key {_last_line(err).strip(chr(39) + chr(34))}; see README.md 'Configs'"
  if isinstance(err, OSError):  # a --config file that cannot be read
    return f"cannot load the config: {_last_line(err)}"
  return f"cannot load the config: {type(err).__name__}: {_last_line(err)}"


def _exit(err: Exception):
  sys.stderr.write(f"error: {_describe(err)}\n")
  sys.exit(2)


def parse_flags(argv):
  """absl's flag parser for `app.run(..., flags_parser=parse_flags)`, exiting with status 2 and one line."""
  try:
    return flags.FLAGS(argv)
  except Exception as err:  # pylint: disable=broad-except
    _exit(err)


def config_value(config_flag):
  """The value of a `config_flags.DEFINE_config_file` flag; ml_collections loads the file only now."""
  try:
    value = config_flag.value
    value.keys()  # a file that failed to load gives a placeholder that raises on first use
    return value
  except Exception as err:  # pylint: disable=broad-except
    _exit(err)


def quiet_library_info(record) -> bool:
  """Keeps Orbax's and TensorFlow's INFO chatter out of the training log; their warnings and errors still
  show, in one line each (s3jax reports what failed and what to do)."""
  if not any(lib in record.pathname for lib in ("/orbax/", "/tensorflow")):
    return True
  if record.levelno < logging.WARNING or "read only" in record.getMessage().replace("_", " "):
    return False  # INFO, and the read-only manager's notes when export/evaluate read a checkpoint
  record.exc_info, record.exc_text = None, None
  return True
