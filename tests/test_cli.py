"""The shells' shared Ctrl-C handling (s3jax/cli.py), with real signals in a child process."""
import subprocess
import sys

from helpers import REPO

# A SIGINT that lands inside a garbage-collector callback (as jax's runs on every collection): a
# KeyboardInterrupt raised there is printed and dropped by Python, so the work would go on.
_CHILD = """
import gc, os, signal, time
from s3jax import cli
if {old}:
  cli._unraisable = lambda frame: False  # raise wherever the signal lands
sent = []
def callback(phase, info):
  if phase == "start" and not sent:
    sent.append(1)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)  # the handler runs here, inside the callback
gc.callbacks.append(callback)
with cli.exit_on_interrupt("nothing was done"):
  gc.collect()
  time.sleep(2)
  print("finished")
"""


def _child(old: bool):
  return subprocess.run([sys.executable, "-c", _CHILD.format(old=old)], cwd=REPO, capture_output=True,
                        text=True, timeout=60)


def test_ctrl_c_inside_a_gc_callback_still_ends_the_command():
  result = _child(old=False)
  assert result.returncode == 130 and "finished" not in result.stdout, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == "error: interrupted (Ctrl-C); nothing was done."
  assert "Traceback" not in result.stderr


def test_without_the_deferral_the_interrupt_is_lost():
  """What the deferral guards against, shown: the same signal raised in place is dropped."""
  result = _child(old=True)
  assert result.returncode == 0 and "finished" in result.stdout
