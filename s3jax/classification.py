"""The loss and accuracy of a classifier, as every evaluation computes them: the trainer's eval, and an
evaluation of a checkpoint or an export. Masked sums, so that a padded last batch counts exactly once."""
import jax
import jax.numpy as jnp
import optax

TOP5_MIN_CLASSES = 6  # top-5 means something only with more than five classes


def cross_entropy_loss(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def topk_correct(logits, labels, k: int):
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1)


def eval_sums(logits, labels, mask) -> dict:
  """Sums of loss, top-1 and top-5 hits, and the example count, over the examples where `mask` is set."""
  mask = jnp.asarray(mask).astype(jnp.float32)
  return {
      "loss": jnp.sum(cross_entropy_loss(logits, labels) * mask),
      "top1": jnp.sum(topk_correct(logits, labels, 1) * mask),
      "top5": jnp.sum(topk_correct(logits, labels, 5) * mask),
      "count": jnp.sum(mask),
  }


def eval_metrics(sums: dict, num_classes: int) -> dict:
  """{'eval/loss', 'eval/top1', 'eval/top5'} means from `eval_sums` totals (top-5 above five classes)."""
  count = float(sums["count"])
  return {f"eval/{k}": float(v) / count for k, v in sums.items()
          if k != "count" and (k != "top5" or num_classes >= TOP5_MIN_CLASSES)}


def format_final(metrics: dict) -> str:
  """The closing line of train.py and evaluate.py: 'final eval/top1 = 0.9800  eval/top5 = ...'."""
  top5 = f"  eval/top5 = {metrics['eval/top5']:.4f}" if "eval/top5" in metrics else ""
  return f"final eval/top1 = {metrics['eval/top1']:.4f}{top5}  eval/loss = {metrics['eval/loss']:.4f}"
