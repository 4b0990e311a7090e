"""Running an export: the plain path, the multiplication-free path, and a StableHLO artifact.

- `plain_apply(export)`: decode the codes to weights and run the same Flax model in eval mode. Its logits
  are bit-identical to the trainer's eval.
- `shift_add_apply(export)`: each quantized conv as a sum over weight levels,
  `y = sum_k ldexp(conv(x, T_k), k)`, with `T_k` the {-1, 0, +1} mask of the weights +-2^k: the weights
  only add, subtract and shift. A learned or fixed scale is one multiply per output channel after the sum
  (foldable into the next BatchNorm). Agrees with the plain path to float rounding.
- `export_stablehlo(export)`: the plain path with the weights baked in (as int8 codes, decoded inside),
  serialised by `jax.export`, so that a process with only `jax` installed can run it (see
  `load_stablehlo`). Its logits equal the plain path's.
"""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from s3jax.export import Export, add_file, decode_tree, is_quantized, verified_path
from s3jax.steps import cross_entropy_loss, topk_correct

STABLEHLO = "model.stablehlo"


def plain_apply(export: Export):
  """A jitted images -> logits function: codes decoded to weights, then the model in eval mode."""
  model = export.create_model()

  @jax.jit
  def apply(params, batch_stats, images):
    return model.apply({"params": decode_tree(params), "batch_stats": batch_stats}, images, train=False)

  return lambda images: apply(export.params, export.batch_stats, images)


def _level_masks(kernel) -> list[tuple[int, jax.Array]]:
  """(k, T_k) for each magnitude 2^k of the kernel's quantizer: T_k in {-1, 0, +1}."""
  w = kernel.unscaled()
  masks = []
  for magnitude in kernel.quantizer.magnitudes():
    k = int(np.log2(magnitude))
    masks.append((k, jnp.where(jnp.abs(w) == magnitude, jnp.sign(w), 0.0).astype(jnp.float32)))
  return masks


def _shift_add_conv(module: nn.Conv, kernel, x):
  """sum_k ldexp(conv(x, T_k), k): the conv of `module` with add/subtract-only kernels and shifts."""
  plain_conv = module.clone(parent=None, name=None)
  y = None
  for k, mask in _level_masks(kernel):
    partial = plain_conv.apply({"params": {"kernel": mask}}, x)
    partial = jnp.ldexp(partial, jnp.int32(k))
    y = partial if y is None else y + partial
  if kernel.scale is not None:
    y = y * kernel.scale_factor().astype(y.dtype)  # one multiply per output channel, not per weight
  return y


def shift_add_apply(export: Export):
  """A jitted images -> logits function in which no quantized weight is multiplied (see module doc)."""
  model = export.create_model()

  @jax.jit
  def apply(params, batch_stats, images):
    kernels = {"/".join(path): leaf["kernel"] for path, leaf in _modules_with_codes(params)}

    def interceptor(next_fun, args, kwargs, context):
      module = context.module
      name = "/".join(module.path)
      if not (isinstance(module, nn.Conv) and context.method_name == "__call__" and name in kernels):
        return next_fun(*args, **kwargs)
      y = _shift_add_conv(module, kernels[name], args[0])
      return y + module.variables["params"]["bias"] if module.use_bias else y

    with nn.intercept_methods(interceptor):
      return model.apply({"params": decode_tree(params), "batch_stats": batch_stats}, images, train=False)

  return lambda images: apply(export.params, export.batch_stats, images)


def _modules_with_codes(params, path=()):
  for key, value in params.items():
    if isinstance(value, dict):
      if is_quantized(value.get("kernel")):
        yield path + (key,), value
      yield from _modules_with_codes(value, path + (key,))


def export_stablehlo(export: Export) -> str:
  """Serialises the plain path, weights baked in and any batch size, into the export; returns its path."""
  model = export.create_model()

  def apply(images):
    # The barrier keeps XLA from constant-folding the baked weights (BatchNorm's statistics into the
    # convs, say), which would change the float rounding: the artifact's logits equal the plain path's.
    params, batch_stats = jax.lax.optimization_barrier((export.params, export.batch_stats))
    return model.apply({"params": decode_tree(params), "batch_stats": batch_stats}, images, train=False)

  batch = jax.export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((*batch, *export.input_shape), jnp.float32)
  exported = jax.export.export(jax.jit(apply))(spec)
  path = os.path.join(export.directory, STABLEHLO)
  with open(path, "wb") as f:
    f.write(exported.serialize())
  add_file(export.directory, "stablehlo", STABLEHLO, input_shape=["batch", *export.input_shape],
           input="normalized images, float32 (see 'input')", output="logits, float32",
           platforms=list(exported.platforms))
  export.manifest = {**export.manifest, "stablehlo": "written"}
  return path


def load_stablehlo(directory: str):
  """The export's StableHLO artifact as a callable (images -> logits), after its checksum is checked."""
  from s3jax.export import read_manifest
  manifest = read_manifest(directory)
  if "stablehlo" not in manifest:
    raise FileNotFoundError(f"{directory} has no {STABLEHLO}; export it with export.py.")
  with open(verified_path(directory, manifest["stablehlo"]), "rb") as f:
    return jax.export.deserialize(bytearray(f.read())).call


def evaluate_apply(apply, dataset) -> tuple[dict, np.ndarray]:
  """(metrics, predictions) of an images -> logits function over the eval split: eval/top1, eval/top5
  (more than five classes), eval/loss, as the trainer logs them, and the top-1 class of every example."""
  sums = {"loss": 0.0, "top1": 0.0, "top5": 0.0}
  count = 0
  predictions = []
  for batch in dataset.eval_batches():
    logits = apply(jnp.asarray(batch["image"]))
    mask = np.asarray(batch["mask"], bool)
    labels = jnp.asarray(batch["label"])
    sums["loss"] += float(jnp.sum(cross_entropy_loss(logits, labels) * mask))
    sums["top1"] += float(jnp.sum(topk_correct(logits, labels, 1) * mask))
    sums["top5"] += float(jnp.sum(topk_correct(logits, labels, 5) * mask))
    count += int(mask.sum())
    predictions.append(np.asarray(jnp.argmax(logits, -1))[mask])
  metrics = {f"eval/{k}": v / count for k, v in sums.items() if k != "top5" or dataset.num_classes > 5}
  return metrics, np.concatenate(predictions)
