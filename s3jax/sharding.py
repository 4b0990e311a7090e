"""Data parallelism: one 'data' mesh axis over every device of every host; state replicated."""
import importlib.util

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
                           process_id: int | None = None):
  """Joins a multi-process run; must come before anything touches a JAX device.

  With a coordinator address (CPU or GPU clusters) the run is set up explicitly, with gloo collectives
  for CPU devices. Without one, Cloud TPU VMs (libtpu installed) find their peers by themselves; a plain
  single-host run does nothing.
  """
  if coordinator_address:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)
  elif importlib.util.find_spec("libtpu") is not None:
    jax.distributed.initialize()
