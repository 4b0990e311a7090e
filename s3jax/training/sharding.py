"""Data parallelism: one 'data' mesh axis over every device of every host; state replicated."""
import importlib.util
import os
import sys
import threading

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_data_mesh(devices=None) -> jax.sharding.Mesh:
  devices = np.asarray(jax.devices() if devices is None else devices)
  return jax.sharding.Mesh(devices, (DATA_AXIS,), axis_types=(AxisType.Explicit,))


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh) -> dict:
  """Per-process numpy arrays -> global arrays sharded on the batch axis across all hosts."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, timeout_s: int = 300) -> int:
  """Joins a multi-process run; must come before anything touches a JAX device.

  With a coordinator address (CPU or GPU clusters) the run is set up explicitly, with gloo collectives
  for CPU devices. Without one, Cloud TPU VMs (libtpu installed) find their peers by themselves; a plain
  single-host run does nothing.

  Returns this process's index. A start that does not reach its peers within `timeout_s` seconds exits
  with one line.
  """
  # XLA aborts the process (pages of C++ stack) when peers do not show up; a watchdog that gives up a
  # little earlier turns that into one line.
  started = threading.Event()

  def watchdog():
    if not started.wait(timeout_s):
      sys.stderr.write(f"error: the multi-process start did not complete within --distributed_timeout="
                       f"{timeout_s}s; start every process with the same --coordinator_address and "
                       "--num_processes.\n")
      sys.stderr.flush()
      os._exit(1)

  if coordinator_address or importlib.util.find_spec("libtpu") is not None:
    threading.Thread(target=watchdog, daemon=True).start()
  if coordinator_address:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s + 60)
  elif importlib.util.find_spec("libtpu") is not None:
    jax.distributed.initialize(initialization_timeout=timeout_s + 60)
  started.set()
  return jax.process_index()
