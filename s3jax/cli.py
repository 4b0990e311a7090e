"""What the command-line shells share: flag and config errors end in one `error:` line, never a traceback;
libraries' INFO chatter stays out of the log."""
import ast
import contextlib
import io
import logging
import os
import signal
import sys
import threading

from absl import app, flags


def _last_line(err: BaseException) -> str:
  lines = [l.strip() for l in str(err).strip().splitlines() if l.strip()]
  return lines[-1] if lines else type(err).__name__


def _missing_key(err: Exception) -> str:
  """'metod; did you mean "method"?' from ml_collections' KeyError or AttributeError. A KeyError's str() is
  the repr of its message (escaped quotes and newlines), so its argument is read instead."""
  text = err.args[0] if err.args and isinstance(err.args[0], str) else str(err)
  while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    try:  # ml_collections re-raises str(KeyError): a repr inside a repr
      text = ast.literal_eval(text)
    except (SyntaxError, ValueError):
      break
  key, _, hint = text.strip().partition("\n")
  key = key.strip().strip("'\"")
  hint = hint.strip().rstrip(".?")
  if hint.startswith("Did you mean"):
    hint = "did you mean" + hint[len("Did you mean"):].split(" instead of ")[0] + "?"
  return key + (f"; {hint}" if hint else "")


def _describe(err: Exception) -> str:
  if isinstance(err, flags.Error):
    return str(err)
  if isinstance(err, (KeyError, AttributeError)):  # ml_collections: a --config.<key> that does not exist
    return f"the config has no key {_missing_key(err)} (see docs/configs.md)"
  if isinstance(err, OSError):  # a --config file that cannot be read
    return f"cannot load the config: {_last_line(err)}"
  return f"cannot load the config: {type(err).__name__}: {_last_line(err)}"


def exit_with_error(err: Exception):
  """Ends the process with status 2 and one line describing a flag or config error."""
  sys.stderr.write(f"error: {_describe(err)}\n")
  sys.exit(2)


HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")


def parse_flags(argv):
  """absl's flag parser for `app.run(..., flags_parser=parse_flags)`, exiting with status 2 and one line.
  `-h` is `--help`, and asking for help exits with status 0 (absl's own exits with 1)."""
  argv = [argv[0]] + ["--help" if a == "-h" else a for a in argv[1:]]
  if any(a in HELP_FLAGS for a in argv[1:]):
    try:
      flags.FLAGS(argv)
    except SystemExit:
      pass
    sys.exit(0)
  try:
    return flags.FLAGS(argv)
  except Exception as err:  # pylint: disable=broad-except
    exit_with_error(err)


def config_value(config_flag):
  """The value of a `config_flags.DEFINE_config_file` flag; ml_collections loads the file only now."""
  try:
    value = config_flag.value
    value.keys()  # a file that failed to load gives a placeholder that raises on first use
    return value
  except Exception as err:  # pylint: disable=broad-except
    exit_with_error(err)


def quiet_library_info(record) -> bool:
  """Keeps Orbax's and TensorFlow's INFO chatter, and jax's notes on the backends it probes ('Unable to
  initialize backend tpu'), out of the log; their warnings and errors still show, in one line each (s3jax
  reports what failed and what to do)."""
  if "/jax/_src/xla_bridge" in record.pathname:
    return record.levelno >= logging.WARNING
  if record.name == "asyncio" and "/orbax/" in record.getMessage():
    return False  # 'Task exception was never retrieved' of Orbax's reads after a failure s3jax reports
  if not any(lib in record.pathname for lib in ("/orbax/", "/tensorflow")):
    return True
  if record.levelno < logging.WARNING or "read only" in record.getMessage().replace("_", " "):
    return False  # INFO, and the read-only manager's notes when export/evaluate read a checkpoint
  record.exc_info, record.exc_text = None, None
  return True


_INTERRUPTED = threading.Event()  # a Ctrl-C arrived


def _raise_interrupt(signum, frame):
  if not _INTERRUPTED.is_set():
    # From here on the process only unwinds to its one line: what library threads torn down by the
    # interrupt print (an asyncio callback's traceback, say) is not shown; `_exit_interrupted` writes to
    # the real stderr.
    sys.stderr = io.StringIO()
  _INTERRUPTED.set()
  raise KeyboardInterrupt


@contextlib.contextmanager
def exit_on_interrupt(consequence: str):
  """Ctrl-C inside the block ends the process with one line, 'error: interrupted (Ctrl-C); <consequence>.',
  and status 130, without a traceback (the block cleans up on its way out). An interrupt that Python
  drops (raised inside a garbage-collector or weakref callback, or a __del__) is delivered again."""
  previous = signal.signal(signal.SIGINT, _raise_interrupt)
  previous_hook = sys.unraisablehook

  def redeliver_dropped_interrupt(unraisable):
    # A KeyboardInterrupt raised in a callback of the garbage collector (jax's runs at every collection),
    # of a weakref (jax's caches hold many) or in a __del__ is printed and dropped by Python, and the work
    # would go on as if no Ctrl-C had come: deliver the signal again, once the callback has returned.
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
      threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
    else:
      previous_hook(unraisable)

  sys.unraisablehook = redeliver_dropped_interrupt
  try:
    yield
  except KeyboardInterrupt:
    _exit_interrupted(consequence)
  except SystemExit as exit_:
    # An error line raised after a Ctrl-C is the interrupt's doing (a checkpoint read it cut short, whose
    # library reported a read error): say what happened, not what it broke.
    if exit_.code not in (0, None) and _INTERRUPTED.is_set():
      _exit_interrupted(consequence)
    raise
  finally:
    signal.signal(signal.SIGINT, previous)
    sys.unraisablehook = previous_hook


def _exit_interrupted(consequence: str):
  sys.stdout.flush()
  sys.__stderr__.write(f"\nerror: interrupted (Ctrl-C); {consequence}.\n")
  sys.__stderr__.flush()
  os._exit(130)  # at once: library threads may still be writing


def exit_with_error_line(message: str):
  """Leaves at once with 'error: <message>' as the console's last line: Orbax's background work, cut
  short by the failure, would print tracebacks at shutdown, and its threads may still write (or log) while
  this one exits. Anything a tool writes is finished or removed before its error reaches here."""
  sys.stdout.flush()
  sys.stderr.flush()
  console = os.dup(2)
  os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # other threads' late output goes nowhere
  os.write(console, f"error: {message}\n".encode())
  os._exit(1)


def run(main, interrupted: str | None = None):
  """What every shell runs: `app.run(main)` with `parse_flags`; stray arguments refused; libraries' INFO
  chatter filtered (`quiet_library_info`) and Orbax's background errors after a failure kept to one log
  line (`records.background_errors.quiet_orbax_background_errors`); a ConfigError from `main` ending in its one
  `error:` line, the console's last (`exit_with_error_line`); and, with `interrupted`, Ctrl-C from the
  flags' parsing on (the imports of jax and Orbax included) ending in one line that says it (what was and
  was not done). train.py passes none: its trainer saves a checkpoint on Ctrl-C."""
  from absl import logging as absl_logging

  from s3jax.errors import ConfigError

  def guarded(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    absl_logging.get_absl_handler().addFilter(quiet_library_info)
    from s3jax.records.background_errors import quiet_orbax_background_errors
    quiet_orbax_background_errors()
    try:
      return main(argv)
    except ConfigError as err:
      if interrupted and _INTERRUPTED.is_set():  # a read that Ctrl-C cut short: say what happened
        _exit_interrupted(interrupted)
      exit_with_error_line(str(err))

  # From the first import of jax on: a Ctrl-C in the seconds a tool spends importing is the same one line.
  with exit_on_interrupt(interrupted) if interrupted else contextlib.nullcontext():
    app.run(guarded, flags_parser=parse_flags)
