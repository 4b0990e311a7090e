"""Pure train and eval steps. Quantization enters in one place: params are materialized before `model.apply`."""
import jax
import jax.numpy as jnp
import optax

from s3jax.classification import cross_entropy_loss, eval_sums
from s3jax.quant import materialize, materialize_tree, project_tree, unbank_tree
from s3jax.quant.interface import is_latent
from s3jax.quant.tree import gradient_proxies, proxy_floats, proxy_pullback
from s3jax.records.eval_program import eval_logits
from s3jax.training.state import TrainState


def make_train_step(model, tx, schedule, fused_pullback: bool = True):
  """(state, batch) -> (state, metrics), for per-layer or banked latents (`training.state.banked_state`:
  what the trainer runs, so that the latent work is a few kernels over all layers).

  The loss is differentiated w.r.t. the materialized weights W, and dL/dW is then pulled back to the
  latents. Under data parallelism the cross-device reduction therefore happens on dL/dW, one weight-sized
  tensor per layer, and the pull-back to the 2+K latents is local.

  The pull-back runs inside the non-finite guard's `lax.cond`, next to the optimizer update, so XLA fuses
  each latent's gradient into its update and never writes the 2+K latent gradients to memory. It reads
  the latents' packed gradient proxies (`quant.gradient_proxies`: one integer a weight, taken before the
  cond), not the latents: a latent's gradient reads the other latents of its layer, which the in-place
  update overwrites, and XLA would otherwise copy every latent first (docs/PERFORMANCE.md). The weights
  are made from the proxies too. `fused_pullback=False` is the step before this one (pull-back before
  the cond), kept to compare with.
  """

  def train_step(state: TrainState, batch):
    if fused_pullback:
      proxies = gradient_proxies(state.params)
      weights = materialized_once(proxies, state.params, state.step)
      pullback = lambda weight_grads: proxy_pullback(proxies, state.params, weight_grads)
    else:
      weights, vjp = jax.vjp(jax.checkpoint(materialize_tree), state.params)
      pullback = lambda weight_grads: vjp(weight_grads)[0]

    def loss_fn(weights):
      logits, updated = model.apply({"params": weights, "batch_stats": state.batch_stats},
                                    batch["image"], train=True, mutable=["batch_stats"])
      return jnp.mean(cross_entropy_loss(logits, batch["label"])), (logits, updated["batch_stats"])

    (loss, (logits, batch_stats)), weight_grads = jax.value_and_grad(loss_fn, has_aux=True)(weights)
    grads = None if fused_pullback else pullback(weight_grads)

    def apply_update(_):
      updates, opt_state = tx.update(pullback(weight_grads) if fused_pullback else grads,
                                     state.opt_state, state.params)
      return project_tree(optax.apply_updates(state.params, updates)), batch_stats, opt_state

    def keep_state(_):
      return state.params, state.batch_stats, state.opt_state

    # A non-finite loss or gradient leaves the state as it was (only the step advances), so a bad batch
    # can never poison the parameters; the trainer then stops or skips on `train/nonfinite`. A cond,
    # not a select: the update still happens in place, with no second copy of the state.
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(weight_grads))
    params, batch_stats, opt_state = jax.lax.cond(finite, apply_update, keep_state, None)
    metrics = {
        "train/loss": loss,
        "train/top1": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "train/lr": schedule(state.step),
        "train/nonfinite": jnp.logical_not(finite).astype(jnp.int32),
    }
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics

  return train_step


def materialized_once(proxies, like, step):
  """The per-layer weights of the params `like` (per-layer or banked latents), made from their gradient
  proxies (`quant.gradient_proxies(like)`: a proxy materializes to its latent's weight, exactly, from 1-2
  bytes instead of 4 per latent), each written once to its own buffer and read from there. The quantized ones are
  made inside a `lax.cond` (both branches alike), which XLA does not fuse into: otherwise it recomputes a
  weight from its latents inside every kernel that reads it, the backward pass's transposed copies
  included, whose strided reads of the 2+K latents cost 5x the contiguous write on CPU. Banks are split
  into layers first, so each layer reads contiguous slices."""
  leaves, treedef = jax.tree.flatten(unbank_tree(like), is_leaf=is_latent)
  if not any(is_latent(x) for x in leaves):
    return jax.tree.unflatten(treedef, leaves)  # a float model, banked or not: its per-layer tree

  def quantized_weights(proxies):
    sources = jax.tree.leaves(unbank_tree(proxy_floats(proxies, like)), is_leaf=is_latent)
    return [materialize(x) for x in sources if is_latent(x)]

  weights = iter(jax.lax.cond(step >= 0, quantized_weights, quantized_weights, proxies))
  return jax.tree.unflatten(treedef, [next(weights) if is_latent(x) else x for x in leaves])


def make_eval_step(model):
  """(state, batch) -> `s3jax.classification.eval_sums` over the batch's unmasked examples."""

  def eval_step(state: TrainState, batch):
    logits = eval_logits(model, state.params, state.batch_stats, batch["image"])
    return eval_sums(logits, batch["label"], batch["mask"])

  return eval_step
