"""Running an export: the plain path, the multiplication-free path, and a StableHLO artifact.

- `plain_apply(export)`: rebuild latents from the codes and run the trainer's own eval program on them.
  Its logits are bit-identical to the trainer's eval.
- `shift_add_apply(export)`: each quantized layer (conv, dense, or attention projection) as a sum over
  weight levels, `y = sum_k ldexp(layer(x, T_k), k)`, with `T_k` the {-1, 0, +1} mask of the weights
  +-2^k: the weights only add, subtract and shift. A learned or fixed scale is one multiply per output
  channel after the sum (foldable into the next BatchNorm). Agrees with the plain path to float rounding.
  Where a layer's input is fixed point (`quant.activations=fixed_point`, x = q * 2^-F), it computes in
  integers: q as int64, each mask's adds and subtracts exact, the partial sums shifted left into the
  finest level's unit and summed; one conversion to float32 per output (`integer_shift_add_layer`).
- `export_stablehlo(export)`: the plain path with its weights baked in (decoded once, as float32 constants),
  serialised by `jax.export`, so that a process with only `jax` installed can run it (see
  `load_stablehlo`). On the ResNets its logits equal the plain path's bit for bit; on a ViT, compiled for
  a symbolic batch, XLA may order float sums differently (measured: within 1e-5 relative).
"""
import contextlib
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from s3jax.classification import eval_metrics, eval_sums
from s3jax.deploy.export_format import Export, decode_tree, decoded_arrays, is_quantized, latent_tree
from s3jax.deploy.manifest import ExportError, add_file, read_manifest, verified_path
from s3jax.models.quantized_inputs import unwrapped
from s3jax.records.eval_program import eval_logits, jit_eval_logits

STABLEHLO = "model.stablehlo"
# Lowered for all three together (the exporting machine needs none of them): one file runs on any.
STABLEHLO_PLATFORMS = ("cpu", "cuda", "tpu")
LAYERS = (nn.Conv, nn.Dense, nn.DenseGeneral)  # the layers whose quantized kernels shift_add_apply runs


def plain_apply(export: Export):
  """A jitted images -> logits function: the trainer's own eval program (`jit_eval_logits`) on latents
  rebuilt from the codes (`latent_tree`). The same program on the same weights: its logits equal the
  trainer's evaluation of the checkpoint bit for bit, on any CPU."""
  apply = jit_eval_logits(export.create_model())
  # On the device once (numpy leaves would be copied over at every call); the latents rebuilt in one
  # program (op by op, each kernel shape compiled programs of its own).
  variables = jax.device_put({"params": jax.jit(latent_tree)(export.params), "batch_stats": export.batch_stats})
  return lambda images: apply(variables, images)


def _exponents(kernel) -> tuple[int, ...]:
  """The k of each magnitude 2^k the kernel's method can hold."""
  return tuple(int(np.log2(m)) for m in kernel.quantizer.magnitudes())


def _level_masks(kernel) -> jax.Array:
  """The {-1, 0, +1} masks T_k of the weights +-2^k, stacked in the order of `_exponents`."""
  w = kernel.unscaled()
  return jnp.stack([jnp.where(jnp.abs(w) == 2.0 ** k, jnp.sign(w), 0.0) for k in _exponents(kernel)])


def _shift_add_layer(module: nn.Module, exponents, masks, scale, x):
  """sum_k ldexp(layer(x, T_k), k): the conv or dense layer `module` with add/subtract-only kernels and
  shifts (its bias, if any, is added by the caller)."""
  plain = module.clone(parent=None, name=None, use_bias=False)
  y = None
  for k, mask in zip(exponents, masks):
    partial = jnp.ldexp(plain.apply({"params": {"kernel": mask}}, x), jnp.int32(k))
    y = partial if y is None else y + partial
  if scale is not None:
    y = y * scale.astype(y.dtype)  # one multiply per output channel, not per weight
  return y


def _integer_linear(module: nn.Module, kernel, q):
  """The Dense or Conv `module`'s linear map of the int64 arrays `q` and `kernel` (lax, in int64: Flax's
  layers compute in float types only); None for another layer or padding (which then runs in float)."""
  if type(module) is nn.Dense:
    return jax.lax.dot_general(q, kernel, (((q.ndim - 1,), (0,)), ((), ())))
  d = len(getattr(module, "kernel_size", ()))
  if type(module) is not nn.Conv or not 1 <= d <= 3 or module.padding in ("CIRCULAR", "CAUSAL", "REFLECT"):
    return None
  as_tuple = lambda v: (v,) * d if isinstance(v, int) else tuple(v or (1,) * d)  # noqa: E731
  padding = module.padding if isinstance(module.padding, str) else [
      (p, p) if isinstance(p, int) else tuple(p) for p in module.padding]
  space = "HWD"[:d]
  return jax.lax.conv_general_dilated(
      q, kernel, as_tuple(module.strides), padding, lhs_dilation=as_tuple(module.input_dilation),
      rhs_dilation=as_tuple(module.kernel_dilation), feature_group_count=module.feature_group_count,
      dimension_numbers=(f"N{space}C", f"{space}IO", f"N{space}C"))


def integer_shift_add_layer(module: nn.Module, exponents, masks, x, fraction_bits: int):
  """(y_q, e): the integer outputs (int64) of the Dense or Conv layer `module` (no bias, no scale) on `x`,
  whose values are fixed point with `fraction_bits` (x = q * 2^-F exactly), and their unit 2^e: y_q * 2^e
  equals sum_k layer(x, T_k) * 2^k without rounding. None for a layer it cannot run in integers. Needs
  64-bit types (`jax.enable_x64`)."""
  q = jnp.round(x.astype(jnp.float64) * 2.0 ** fraction_bits).astype(jnp.int64)  # exact: x is on the grid
  finest = min(exponents)
  y_q = None
  for k, mask in zip(exponents, masks):
    partial = _integer_linear(module, mask.astype(jnp.int64), q)  # adds and subtracts
    if partial is None:
      return None
    partial = partial << (k - finest)  # a shift
    y_q = partial if y_q is None else y_q + partial
  return y_q, finest - fraction_bits


def shift_add_apply(export: Export):
  """A jitted images -> logits function in which no quantized weight is multiplied (see module doc).
  The level masks are built once, here. Its `integer_layers` attribute names the layers it ran in
  integers (filled at the first call)."""
  model = export.create_model()
  aq = export.activations
  fixed_inputs = set(export.manifest["activations"]["layers"]) if aq.kind == "fixed_point" else set()
  kernels = {"/".join(path): leaf["kernel"] for path, leaf in _modules_with_codes(export.params)}
  exponents = {name: _exponents(k) for name, k in kernels.items()}
  masks = jax.jit(lambda ks: {name: _level_masks(k) for name, k in ks.items()})(kernels)
  scales = {name: k.scale_factor() for name, k in kernels.items()}
  weights = jax.jit(decode_tree)(export.params)  # only the float layers read these
  shifted, integer_layers = set(), set()  # filled while `apply` traces

  @jax.jit
  def apply(weights, masks, scales, batch_stats, images):
    def interceptor(next_fun, args, kwargs, context):
      module = context.module
      name = "/".join(module.path)
      if not (isinstance(module, LAYERS) and context.method_name == "__call__" and name in masks):
        return next_fun(*args, **kwargs)
      shifted.add(name)
      integer = name in fixed_inputs and integer_shift_add_layer(
          module, exponents[name], masks[name], args[0], aq.fraction_bits)
      if integer:
        integer_layers.add(name)
        y = jnp.ldexp(integer[0].astype(jnp.float32), jnp.int32(integer[1]))  # one rounding, exact below 2^24
        y = y if scales[name] is None else y * scales[name].astype(y.dtype)
      else:
        y = _shift_add_layer(module, exponents[name], masks[name], scales[name], args[0])
      return y + module.variables["params"]["bias"] if module.use_bias else y

    flax_model, quantized_inputs = unwrapped(model)
    with quantized_inputs, nn.intercept_methods(interceptor):  # inputs quantized first, then shifted
      return flax_model.apply({"params": weights, "batch_stats": batch_stats}, images, train=False)

  def run(images):
    with jax.enable_x64(True) if fixed_inputs else contextlib.nullcontext():  # int64 sums; floats stay float32
      logits = apply(weights, masks, scales, export.batch_stats, jnp.asarray(images, jnp.float32))
    if set(masks) - shifted:  # such a layer ran on decoded weights: not multiplication-free
      raise ExportError(f"{sorted(set(masks) - shifted)[0]} is not a Conv, Dense or DenseGeneral layer: the "
                        "shift-add path cannot run it without multiplies; use --path=plain.")
    return logits

  run.integer_layers = integer_layers
  return run


def _modules_with_codes(params, path=()):
  for key, value in params.items():
    if isinstance(value, dict):
      if is_quantized(value.get("kernel")):
        yield path + (key,), value
      yield from _modules_with_codes(value, path + (key,))


@contextlib.contextmanager
def _no_source_locations():
  """Lowers with no Python frames in the MLIR locations (only the op names), as jax's config allows."""
  limit = jax.config.jax_traceback_in_locations_limit
  jax.config.update("jax_traceback_in_locations_limit", 0)
  try:
    yield
  finally:
    jax.config.update("jax_traceback_in_locations_limit", limit)


def export_stablehlo(export: Export) -> str:
  """Serialises the plain path, weights baked in and any batch size, lowered for CPU, CUDA and TPU, into
  the export; returns its path."""
  model = export.create_model()
  # Decoded once, here: the artifact holds the float weights, so no call pays the int8 -> float decode,
  # which XLA:CPU does not fuse into the dot (docs/PERFORMANCE.md).
  weights = decoded_arrays(export.params)

  def apply(images):
    # The barrier keeps XLA from constant-folding the baked weights (BatchNorm's statistics into the
    # convs, say), which would change the float rounding. They are the weights the plain path
    # materializes from its latents, and the same eval function follows.
    params, batch_stats = jax.lax.optimization_barrier((weights, export.batch_stats))
    return eval_logits(model, params, batch_stats, images)

  batch = jax.export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((*batch, *export.input_shape), jnp.float32)
  # No source locations in the artifact: it would name this machine's paths, and its hash would change
  # with every edit or reinstall of s3jax that leaves the program as it was.
  with _no_source_locations():
    exported = jax.export.export(jax.jit(apply), platforms=STABLEHLO_PLATFORMS)(spec)
  path = os.path.join(export.directory, STABLEHLO)
  with open(path, "wb") as f:
    f.write(exported.serialize())
  export.manifest = add_file(export.directory, "stablehlo", STABLEHLO,
                             input_shape=["batch", *export.input_shape],
                             input="normalized images, float32 (see 'input')", output="logits, float32",
                             platforms=list(exported.platforms))
  return path


def load_stablehlo(directory: str):
  """The export's StableHLO artifact as a jitted callable (images -> logits), after its checksum is checked.
  Jitted: `Exported.call` alone checks its shapes in Python at every call (docs/PERFORMANCE.md: 2.3x the
  time of the MLP at batch 1); under `jax.jit` that happens once per input shape."""
  manifest = read_manifest(directory)
  if "stablehlo" not in manifest:
    raise ExportError(f"{directory} has no {STABLEHLO}: it was exported with --nostablehlo. Export the run "
                      "again without that flag, or evaluate it with --path=plain.")
  with open(verified_path(directory, manifest["stablehlo"]), "rb") as f:
    return jax.jit(jax.export.deserialize(bytearray(f.read())).call)


def evaluate_apply(apply, dataset) -> tuple[dict, np.ndarray]:
  """(metrics, predictions) of an images -> logits function over the eval split: eval/top1, eval/top5
  (more than five classes), eval/loss, as the trainer logs them, and the top-1 class of every example."""
  totals, predictions = {}, []
  for batch in dataset.eval_batches():
    logits = apply(jnp.asarray(batch["image"]))
    mask = np.asarray(batch["mask"], bool)
    for key, value in eval_sums(logits, jnp.asarray(batch["label"]), mask).items():
      totals[key] = totals.get(key, 0.0) + float(value)
    predictions.append(np.asarray(jnp.argmax(logits, -1))[mask])
  return eval_metrics(totals, dataset.num_classes), np.concatenate(predictions)
