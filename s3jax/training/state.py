"""The train state: parameters (latents where quantized), BatchNorm statistics, optimizer state, and the
signs the weight dynamics compare against. Built and restored from abstract shapes, never twice."""
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp

from s3jax.config import latent_banking
from s3jax.models.quantized_inputs import calibrated_variables
from s3jax.quant.banks import Banked, bank_tree, map_banked_subtrees, unbank_tree
from s3jax.records.resolved import ResolvedRun
from s3jax.records.variables import abstract_variables, init_variables, run_init_program
from s3jax.training import sharding
from s3jax.training.optim import make_optimizer
from s3jax.quant.dynamics import tracked_signs, tracked_weights


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any          # latents (S3Latent, ...) for quantized kernels, arrays elsewhere
  batch_stats: Any
  opt_state: Any
  signs: Any = ()      # int8 signs of the tracked weights at the last eval (weight dynamics)
  signs_step: Any = 0  # the step those signs were taken at


def jitted_initializer(run: ResolvedRun, model, input_shape, mesh):
  """(init, tx, schedule): `init(key)` is the initial state, replicated over `mesh`. jit caches its trace,
  so `init.trace(key).out_info` (the state's shapes: a restore target) and `init(key)` trace it once."""
  abstract_params, _ = abstract_variables(run, model, input_shape)
  tx, schedule = make_optimizer(run, abstract_params)

  def init_state(key):
    return state_from_variables(run, tx, *init_variables(run, model, input_shape, key))

  return jax.jit(init_state, out_shardings=sharding.replicated(mesh)), tx, schedule


def state_from_variables(run: ResolvedRun, tx, params, batch_stats) -> TrainState:
  """The state at step 0 with these variables and a fresh optimizer state."""
  signs = tracked_signs(tracked_weights(params, run.rules))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), signs=signs, signs_step=jnp.zeros((), jnp.int32))


def calibrated_state(model, state: TrainState, images) -> TrainState:
  """The step-0 state with each quantized layer's input step size and signedness set from `images` as the
  first train step will see them (LSQ's init over the first batch; `quantized_inputs.calibrated_variables`)."""
  variables = calibrated_variables(model, {"params": state.params, "batch_stats": state.batch_stats}, images,
                                   train=True)
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])


def create_train_state(run: ResolvedRun, model, input_shape, mesh):
  """The initial state of `run` (resolved with its durations), replicated over `mesh`, and the
  optimizer's (tx, schedule)."""
  init, tx, schedule = jitted_initializer(run, model, input_shape, mesh)
  return run_init_program(init, jax.random.key(run.config.seed)), tx, schedule


def banked_state(state: TrainState, max_size: int | None = None) -> TrainState:
  """The state with its latents in banks (`s3jax.quant.banks`; with `max_size`, those of layers of at most
  that many weights), in the params and in every optimizer-state subtree shaped like them (momenta, RAdam's
  moments): what the train step runs on."""
  structure = jax.tree.structure(state.params)
  bank = functools.partial(bank_tree, max_size=max_size)
  opt_state = map_banked_subtrees(state.opt_state, bank, lambda x: jax.tree.structure(x) == structure)
  return state.replace(params=bank(state.params), opt_state=opt_state)


def unbanked_state(state: TrainState) -> TrainState:
  """The per-layer state of a banked one (what checkpoints hold); a per-layer state is returned as it is."""
  opt_state = map_banked_subtrees(state.opt_state, unbank_tree, lambda x: isinstance(x, Banked))
  return state.replace(params=unbank_tree(state.params), opt_state=opt_state)


def state_for_training(config, state: TrainState, mesh):
  """(the state the train step runs on: on latent banks where `config.bank_latents` chooses them for this
  backend, `s3jax.config.latent_banking`; the jitted conversion back to the per-layer state that
  checkpoints hold, or None where the state is not banked)."""
  banked, max_size = latent_banking(config, jax.default_backend())
  if not banked:
    return state, None
  to_banks = jit_state_conversion(functools.partial(banked_state, max_size=max_size), mesh)
  return to_banks(state), jit_state_conversion(unbanked_state, mesh)


def jit_state_conversion(convert, mesh):
  """`banked_state` or `unbanked_state` jitted over `mesh`, replicated. (Donating the input would not
  help: the two forms share no buffer shapes.)"""
  return jax.jit(convert, out_shardings=sharding.replicated(mesh))
