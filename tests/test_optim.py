"""Dense penalty, optimizer chain, masks and schedules against their definitions (docs/METHODS.md)."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import flax.linen as nn
import pytest

import s3jax
from helpers import apply_overrides
from s3jax import dense_penalty, dense_weight_penalty, init_latent, make_optimizer, materialize
from s3jax.config import base_config
from s3jax.records.resolved import Durations, resolve_run
from s3jax.training.optim import make_schedule


def optim_config(**overrides):
  c = base_config()  # the trainer's config, at this recipe
  c.batch_size, c.num_epochs = 256, 10
  c.quant.dense_penalty = 1e-5
  c.optim.update({"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine_epoch",
                  "warmup_epochs": 0, "optimizer": "sgd", "latent_weight_decay": True})
  return apply_overrides(c, overrides)


def toy_params():
  keys = jax.random.split(jax.random.key(0), 3)
  return {"conv": {"kernel": init_latent(keys[0], (3, 3, 4, 8), 3)},
          "bn": {"scale": jnp.ones((8,))},
          "head": {"kernel": jax.random.normal(keys[1], (8, 5)), "bias": jnp.zeros((5,))}}


def toy_loss(params, x):
  w = materialize(params["conv"]["kernel"])
  h = jnp.einsum("nhwi,hwio->no", x, w) * params["bn"]["scale"]
  logits = h @ params["head"]["kernel"] + params["head"]["bias"]
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[:, 0])


def test_dense_penalty_is_a_sum_over_negative_sparse_latents():
  p = toy_params()
  sparse = np.asarray(p["conv"]["kernel"].sparse)
  np.testing.assert_allclose(dense_penalty(p), np.sum(np.maximum(-sparse, 0)), rtol=1e-6)
  assert float(dense_penalty({"w": jnp.ones(3)})) == 0.0


def test_penalty_transform_touches_only_sparse_leaves():
  p = toy_params()
  alpha = 0.5
  tx = dense_weight_penalty(alpha)
  zeros = jax.tree.map(jnp.zeros_like, p)
  updates, _ = tx.update(zeros, tx.init(p), p)
  expected = jax.tree.map(jnp.zeros_like, p)
  sparse = p["conv"]["kernel"].sparse
  expected["conv"]["kernel"] = expected["conv"]["kernel"].__class__(
      sign=expected["conv"]["kernel"].sign, shift=expected["conv"]["kernel"].shift,
      sparse=-alpha * (sparse < 0).astype(jnp.float32))
  chex.assert_trees_all_equal(updates, expected)
  # It equals the autodiff gradient of alpha * dense_penalty.
  grad = jax.grad(lambda q: alpha * dense_penalty(q))(p)
  chex.assert_trees_all_close(updates, grad, atol=0)


@pytest.mark.parametrize("alpha", [1e-5, 0.05])
def test_penalty_in_chain_equals_penalty_in_loss(alpha):
  """Several SGD+momentum+weight-decay steps: transform in the chain == alpha*R added to the loss."""
  config = optim_config(**{"quant.dense_penalty": alpha, "optim.schedule": "constant"})
  no_penalty = optim_config(**{"quant.dense_penalty": 0.0, "optim.schedule": "constant"})
  x = jax.random.normal(jax.random.key(1), (16, 3, 3, 4))
  p0 = toy_params()

  def run(cfg, loss_fn):
    tx, _ = make_optimizer(resolve_run(cfg, steps_per_epoch=10), p0)
    p, state = p0, tx.init(p0)
    for _ in range(6):
      g = jax.grad(loss_fn)(p, x)
      updates, state = tx.update(g, state, p)
      p = optax.apply_updates(p, updates)
    return p

  in_chain = run(config, toy_loss)
  in_loss = run(no_penalty, lambda p, x: toy_loss(p, x) + alpha * dense_penalty(p))
  without = run(no_penalty, toy_loss)
  chex.assert_trees_all_close(in_chain, in_loss, atol=1e-6, rtol=0)
  gap = np.max(np.abs(np.asarray(in_chain["conv"]["kernel"].sparse - without["conv"]["kernel"].sparse)))
  assert gap > 0.5 * alpha * 0.1  # the penalty visibly moved the sparse latents


def test_cosine_epoch_schedule_reproduces_the_reference_formula():
  spe, epochs = 7, 5
  config = optim_config(**{"num_epochs": epochs, "batch_size": 512})
  sched = make_schedule(config, Durations.from_config(config, spe))
  base = 0.1 * 512 / 256
  for step in range(spe * epochs):
    e = step // spe
    np.testing.assert_allclose(sched(step), base * 0.5 * (1 + math.cos(math.pi * (e + 1) / epochs)),
                               rtol=1e-6, atol=1e-7)


def test_per_step_cosine_warmup_and_constant():
  spe = 10
  config = optim_config(**{"optim.schedule": "cosine", "optim.warmup_epochs": 2, "num_epochs": 6})
  sched = make_schedule(config, Durations.from_config(config, spe))
  np.testing.assert_allclose(sched(0), 0.0)
  np.testing.assert_allclose(sched(10), 0.05, rtol=1e-6)  # halfway through warm-up
  np.testing.assert_allclose(sched(20), 0.1, rtol=1e-6)
  np.testing.assert_allclose(sched(40), 0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)), rtol=1e-5)
  np.testing.assert_allclose(sched(60), 0.0, atol=1e-7)
  constant = optim_config(**{"optim.schedule": "constant", "batch_size": 64})
  const = make_schedule(constant, Durations.from_config(constant, spe))
  np.testing.assert_allclose(const(123), 0.1 * 64 / 256)
  with pytest.raises(ValueError, match="schedule"):
    unknown = optim_config(**{"optim.schedule": "step"})
    make_schedule(unknown, Durations.from_config(unknown, spe))


def test_momentum_and_coupled_weight_decay_follow_pytorch_sgd():
  """PyTorch SGD: buf = m*buf + (g + wd*p); p -= lr*buf."""
  config = optim_config(**{"optim.schedule": "constant", "quant.dense_penalty": 0.0,
                           "optim.weight_decay": 0.01})
  p = {"w": jnp.array([1.0, -2.0])}
  tx, _ = make_optimizer(resolve_run(config, steps_per_epoch=1), p)
  state = tx.init(p)
  buf, ref = np.zeros(2), np.array([1.0, -2.0])
  for g in ([0.5, 0.1], [-0.3, 0.2], [0.0, 1.0]):
    updates, state = tx.update({"w": jnp.array(g)}, state, p)
    p = optax.apply_updates(p, updates)
    buf = 0.9 * buf + (np.array(g) + 0.01 * ref)
    ref = ref - 0.1 * buf
  np.testing.assert_allclose(p["w"], ref, rtol=1e-6)


@pytest.mark.parametrize("latent_decay", [True, False])
def test_weight_decay_skips_scales_and_optionally_latents(latent_decay):
  """One plain-SGD step on zero gradients moves exactly the decayed leaves, by -lr * wd * p."""
  from s3jax import quantizer
  config = optim_config(**{"optim.schedule": "constant", "quant.dense_penalty": 0.0, "optim.momentum": 0.0,
                           "optim.weight_decay": 0.5, "optim.latent_weight_decay": latent_decay})
  keys = jax.random.split(jax.random.key(0), 3)
  p = {"ps": {"kernel": quantizer("deepshift_ps", 3, scale="learned").init(keys[0], (3, 3, 4, 8))},
       "s3": {"kernel": quantizer("s3", 3, scale="fixed").init(keys[1], (3, 3, 8, 8))},
       "head": {"bias": jnp.ones((5,))}}
  tx, _ = make_optimizer(resolve_run(config, steps_per_epoch=1), p)
  zeros = jax.tree.map(jnp.zeros_like, p)
  updates, _ = tx.update(zeros, tx.init(p), p)
  roles = jax.tree.leaves(s3jax.quant.role_tree(p))
  for role, u, x in zip(roles, jax.tree.leaves(updates), jax.tree.leaves(p)):
    decayed = role == "float" or (latent_decay and role not in ("scale", "log_scale"))
    np.testing.assert_allclose(u, -0.1 * 0.5 * x if decayed else 0 * x, rtol=1e-6, err_msg=role)
  assert sorted(set(roles)) == ["float", "log_scale", "scale", "shift", "sign", "sparse"]


def test_radam_option_runs_deepshift_recipe():
  from s3jax import project_tree, quantizer
  config = optim_config(**{"optim.optimizer": "radam", "optim.lr": 0.01, "optim.weight_decay": 0.0,
                           "optim.schedule": "constant"})
  p = {"k": quantizer("deepshift_ps", 3).init(jax.random.key(0), (3, 3, 4, 8))}
  tx, _ = make_optimizer(resolve_run(config, steps_per_epoch=1), p)
  state = tx.init(p)
  g = jax.grad(lambda q: jnp.sum(s3jax.materialize(q["k"]) * 3.0))(p)
  for _ in range(10):  # RAdam's first steps are momentum SGD; it still moves every latent
    updates, state = tx.update(g, state, p)
    p = project_tree(optax.apply_updates(p, updates))
  assert float(p["k"].shift.max()) <= 0 and float(p["k"].shift.min()) >= -2
  with pytest.raises(ValueError, match="optim.optimizer='adam' is unknown"):
    make_optimizer(resolve_run(optim_config(**{"optim.optimizer": "adam"}), steps_per_epoch=1), p)


class _TinyNet(nn.Module):
  """conv - BatchNorm - conv - dense: two quantized kernels with a normalisation, as in a ResNet."""

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(8, (3, 3), use_bias=False)(x)))
    x = nn.relu(nn.Conv(8, (3, 3), use_bias=False)(x))
    return nn.Dense(10)(x.mean(axis=(1, 2)))


# Banks: none; every layer's latents; only layers of at most 100 weights (the first conv's 72, not the
# second's 576): a state whose latents are part banked, part per layer, as the trainer's 'auto' on CPU.
@pytest.mark.parametrize("banked", [False, True, 100], ids=["per_layer", "banked", "small_banked"])
@pytest.mark.parametrize("method,scale,optimizer", [
    ("s3", "none", "sgd"), ("deepshift_ps", "none", "sgd"), ("deepshift_q", "none", "sgd"),
    ("s3", "learned", "sgd"), ("denseshift", "none", "sgd"), ("s3", "none", "radam")])
def test_train_step_matches_the_optax_chain(method, scale, optimizer, banked):
  """The trainer's step (pull-back from int8 gradient proxies inside the guard; latents per layer or in
  banks) against the plain form: dL/dW pulled back through materialize_tree at the per-layer latents, the
  optax chain, apply_updates, project_tree. Every leaf, every step, for every method, scale and optimizer."""
  from s3jax.training.state import TrainState, banked_state, unbanked_state
  from s3jax.training.steps import make_train_step
  from s3jax.config import base_config
  config = apply_overrides(base_config(), {
      "batch_size": 8, "optim.schedule": "constant", "optim.lr": 3.0, "optim.weight_decay": 1e-3,
      "optim.optimizer": optimizer, "quant.method": method, "quant.scale": scale, "quant.dense_penalty": 1e-2})
  model = _TinyNet()
  rng = np.random.default_rng(0)
  batches = [{"image": jnp.asarray(rng.standard_normal((8, 8, 8, 1)), jnp.float32),
              "label": jnp.asarray(rng.integers(0, 10, 8), jnp.int32)} for _ in range(4)]
  variables = model.init(jax.random.key(0), batches[0]["image"], train=False)
  q = s3jax.quant.quantizer_from_config(config.quant)
  params = s3jax.quant.to_latents(variables["params"], s3jax.quant.rules_for(r"Conv_\d/kernel", q), jax.random.key(1))
  assert len(s3jax.quant.quantized_paths(params)) == 2
  tx, schedule = make_optimizer(resolve_run(config, steps_per_epoch=10), params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables["batch_stats"],
                     opt_state=tx.init(params))
  if banked:
    state = banked_state(state, max_size=None if banked is True else banked)
    assert len(state.params.banks) == (0 if scale != "none" else 1)
    banked_weights = [] if scale != "none" else [72 + 576] if banked is True else [72]
    assert [len(jax.tree.leaves(b)[0]) for b in state.params.banks] == banked_weights
  step = jax.jit(make_train_step(model, tx, schedule))
  # Bit for bit where the pull-back multiplies dL/dW only by powers of two (and ln 2) and SGD updates.
  exact = s3jax.quant.tree.exact_pullback(params) and optimizer == "sgd"
  assert exact == (method != "denseshift" and scale == "none" and optimizer == "sgd")

  @jax.jit
  def reference(params, batch_stats, opt_state, batch):
    def loss_fn(weights):
      logits, updated = model.apply({"params": weights, "batch_stats": batch_stats}, batch["image"],
                                    train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), updated
    weights, pullback = jax.vjp(s3jax.quant.materialize_tree, params)  # the latents themselves
    (loss, updated), weight_grads = jax.value_and_grad(loss_fn, has_aux=True)(weights)
    (grads,) = pullback(weight_grads)

    def update(_):
      updates, new_opt_state = tx.update(grads, opt_state, params)
      return (s3jax.quant.project_tree(optax.apply_updates(params, updates)), updated["batch_stats"],
              new_opt_state)

    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(weight_grads))
    return jax.lax.cond(finite, update, lambda _: (params, batch_stats, opt_state), None)

  expected = (params, variables["batch_stats"], tx.init(params))
  for batch in batches:
    state, metrics = step(state, batch)
    expected = reference(*expected, batch)
    assert int(metrics["train/nonfinite"]) == 0
    per_layer = unbanked_state(state)
    got = (per_layer.params, per_layer.batch_stats, per_layer.opt_state)
    if exact:
      chex.assert_trees_all_equal(got, expected)
    else:  # XLA orders the sqrt surrogate's, the scale's or RAdam's float ops its own way: a few ulp of
      # the operands apart (latents ~0.05, whose ulp is 4e-9; a sum that cancels keeps that absolute error)
      chex.assert_trees_all_close(got, expected, rtol=5e-7, atol=1e-8)
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), unbanked_state(state).params, params)
  assert all(jax.tree.leaves(moved)), moved  # a non-zero learning rate: every latent leaf changed
