"""Orbax's background errors after a failure s3jax has reported, kept to one log line. Plain Python: the
tools install it before they import jax or Orbax."""
import os
import sys

from absl import logging


def _is_orbax_background_error(kind, value, source=None) -> bool:
  """'Event loop is closed' from tensorstore's callbacks, or an error left in an Orbax coroutine that was
  never awaited again (`source`): what Orbax's background work leaves when a save or read fails."""
  if isinstance(value, KeyboardInterrupt):
    return False  # a Ctrl-C that landed in Orbax's work: s3jax.cli delivers it again
  code = getattr(source, "cr_code", None)
  return ((kind is RuntimeError and "Event loop is closed" in str(value))
          or (code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename))


def quiet_orbax_background_errors():
  """Orbax's background work, cut short by a failed save or an unreadable checkpoint, raises by the hundred
  from tensorstore's C callbacks and from abandoned coroutines (as unraisable exceptions), after s3jax has
  reported the failure; one line is kept for the log, and every other exception still reaches Python's
  hooks. Every command-line tool installs this (`s3jax.cli.run`), before jax or Orbax is imported."""
  default_excepthook, default_unraisablehook = sys.excepthook, sys.unraisablehook

  def log_once(value):
    logging.log_first_n(logging.WARNING, "Orbax background work stopped: %s", 1,
                        " ".join(str(value).split())[:200])

  def excepthook(kind, value, tb):
    if _is_orbax_background_error(kind, value):
      return log_once(value)
    default_excepthook(kind, value, tb)

  def unraisablehook(unraisable):
    if _is_orbax_background_error(unraisable.exc_type, unraisable.exc_value, unraisable.object):
      return log_once(unraisable.exc_value)
    default_unraisablehook(unraisable)

  sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
