"""The variables a config builds, and their shapes without building them: what the trainer starts from
and what every tool that reads a checkpoint restores into."""
import jax
import jax.numpy as jnp

from s3jax import quant


def init_variables(config, model, input_shape, key):
  """(params, batch_stats) of a fresh model: Flax's init, then latents for the kernels `quant.rules`
  choose (none for quant.method='float')."""
  quantizer = quant.quantizer_from_config(config.quant)
  model_key, latent_key = jax.random.split(key)
  variables = model.init(model_key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
  params = variables["params"]
  if quantizer is not None:
    params = quant.to_latents(params, config.quant.rules, latent_key, quantizer=quantizer)
  return params, variables.get("batch_stats", {})


def run_init_program(init, key):
  """`init(key)` for a jitted init program (Flax's init, latents, an optimizer state), compiled at LLVM O1
  on CPU: its PRNG loops compile about 2x faster than at the default O2, to the same values (tests/
  test_train.py), and it runs once. Elsewhere, or under a trace (`jax.eval_shape`), the plain `init(key)`."""
  if jax.default_backend() != "cpu" or isinstance(key, jax.core.Tracer):
    return init(key)
  return init.trace(key).lower().compile({"xla_backend_optimization_level": 1})(key)


def abstract_variables(config, model, input_shape):
  """`init_variables`' shapes and dtypes, computed without allocating them."""
  return jax.eval_shape(lambda key: init_variables(config, model, input_shape, key), jax.random.key(config.seed))


def abstract_variables_on_one_device(config, model, input_shape) -> dict:
  """{'params', 'batch_stats'} as `abstract_variables` gives them, on the first local device: what a tool
  that reads one checkpoint on one host (export, evaluate, init_from) restores into."""
  params, batch_stats = abstract_variables(config, model, input_shape)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                      {"params": params, "batch_stats": batch_stats})
