"""The shells' shared Ctrl-C handling (s3jax/cli.py), with real signals in a child process."""
import subprocess
import sys

import pytest

from helpers import REPO

# A SIGINT that lands inside a callback Python calls from C (the garbage collector's, as jax's runs on
# every collection, or a weakref's, as jax's caches hold): a KeyboardInterrupt raised there is printed and
# dropped by Python, so the work would go on.
_CHILD = """
import gc, os, signal, sys, time, weakref
from s3jax import cli
sent = []
def interrupt(*args):
  if not sent:
    sent.append(1)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)  # the handler runs here, inside the callback
class Cached:
  pass
with cli.exit_on_interrupt("nothing was done"):
  if {without_redelivery}:
    sys.unraisablehook = sys.__unraisablehook__
  if "{where}" == "gc":
    gc.callbacks.append(lambda phase, info: phase == "start" and interrupt())
    gc.collect()
  else:
    cached = Cached()
    ref = weakref.ref(cached, interrupt)
    del cached
  time.sleep(2)
  print("finished")
"""


def _child(where: str, without_redelivery: bool = False):
  return subprocess.run([sys.executable, "-c", _CHILD.format(where=where, without_redelivery=without_redelivery)],
                        cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("where", ["gc", "weakref"])
def test_ctrl_c_inside_a_callback_python_drops_still_ends_the_command(where):
  result = _child(where)
  assert result.returncode == 130 and "finished" not in result.stdout, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == "error: interrupted (Ctrl-C); nothing was done."
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["gc", "weakref"])
def test_without_the_redelivery_the_interrupt_is_lost(where):
  """What the redelivery guards against, shown: the same signal, with Python's own hook, is dropped."""
  result = _child(where, without_redelivery=True)
  assert result.returncode == 0 and "finished" in result.stdout


def test_a_tools_first_import_does_not_wait_for_jax():
  """`from s3jax.cli import run`, a tool's first line, installs its Ctrl-C handler before jax is imported."""
  code = "import sys; from s3jax.cli import run; print(sorted(m for m in sys.modules if m.split('.')[0] == 'jax'))"
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.stdout.strip() == "[]", result.stderr[-2000:]
