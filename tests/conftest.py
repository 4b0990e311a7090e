"""Tests run on 8 fake CPU devices, compiled at LLVM O1 (below); the flags must be set before JAX
initialises its backend.

One persistent XLA compilation cache serves the whole run (both xdist workers and every CLI subprocess
inherit it): the trainer starts dozens of times on the same few models, and compiling the same
executables again was most of the suite's time. A size limit makes JAX lock the cache, so concurrent
processes never read a half-written entry. Programs that compile in 0.1 s or more are cached (JAX's default
is 1 s): a trainer start compiles several of 0.1-1 s (the eval step, the state's conversions to and from
banks), and about a hundred starts share them (three CLI-heavy test files on a 2-core AVX-512 AMD EPYC:
146 s at 0.1, 149-160 s at 0.2, 156 s at 0.5, 166-173 s at 1; caching everything was slower still).
The cache lives for one run only.
"""
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  # The test processes compile at LLVM O1, as the trainer compiles its init program: their eager
  # ops (Flax's init, the latents' PRNG draws) each compile a program, 3.5x faster than at XLA's default
  # (ResNet-8's 3-bit S3 latents, eagerly: 7.6 s against 26.7 s on a 2-core AVX2 EPYC). The CLIs they
  # start (helpers.cli_env) compile as a user's do.
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # false in xdist workers: they inherit it
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="s3jax-tests-xla-cache-")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
