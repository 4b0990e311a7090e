"""The variables a run builds, and their shapes without building them: what the trainer starts from
and what every tool that reads a checkpoint restores into."""
import jax
import jax.numpy as jnp

from s3jax import quant
from s3jax.records.resolved import ResolvedRun


def init_variables(run: ResolvedRun, model, input_shape, key):
  """(params, batch_stats) of a fresh model: Flax's init, then latents for the kernels `run.rules` choose
  (none where they are full precision)."""
  model_key, latent_key = jax.random.split(key)
  variables = model.init(model_key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
  params = quant.to_latents(variables["params"], run.rules, latent_key)
  return params, variables.get("batch_stats", {})


def run_init_program(init, key):
  """`init(key)` for a jitted init program (Flax's init, latents, an optimizer state), compiled at LLVM O1
  on CPU: its PRNG loops compile about 2x faster than at the default O2, to the same values (tests/
  test_train.py), and it runs once. Elsewhere, or under a trace (`jax.eval_shape`), the plain `init(key)`."""
  if jax.default_backend() != "cpu" or isinstance(key, jax.core.Tracer):
    return init(key)
  return init.trace(key).lower().compile({"xla_backend_optimization_level": 1})(key)


def abstract_variables(run: ResolvedRun, model, input_shape):
  """`init_variables`' shapes and dtypes, computed without allocating them."""
  return jax.eval_shape(lambda key: init_variables(run, model, input_shape, key), jax.random.key(run.config.seed))


def abstract_variables_on_one_device(run: ResolvedRun, model, input_shape) -> dict:
  """{'params', 'batch_stats'} as `abstract_variables` gives them, on the first local device: what a tool
  that reads one checkpoint on one host (export, evaluate, init_from) restores into."""
  params, batch_stats = abstract_variables(run, model, input_shape)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                      {"params": params, "batch_stats": batch_stats})
