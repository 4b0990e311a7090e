"""An export as LiteRT (TFLite) flatbuffers whose low-bit weights are stored as int4 or int8 integers.

Each quantized kernel enters the graph as its levels times a power-of-two unit (DeepShift's fractions
1/4, 1/2 become 1, 2), wrapped in a `quant.fake_quant` composite with the integer type and the per-channel
scale (the unit times the kernel's own scale). The LiteRT converter turns that composite into a
quantized constant holding exactly those integers: int4 where they fit [-7, 7], int8 where they fit
[-127, 127]. The rest of the graph is the trainer's eval program (`eval_logits`), lowered by `jax.export`
and converted without TensorFlow (`litert-converter`), which folds the BatchNorm after a conv into the
quantized conv's per-channel scale.

Modes: 'float' keeps float activations (the weights are dequantized at load); 'dynamic_int8' quantizes
each quantized layer's input on the fly (LiteRT's hybrid kernels); 'full_int8', for a run that trained
quantized activations (`quant.activations=lsq` or `calibrated`, 8 bits), stores each quantized
layer's input as int8 on its learned grid, so that the layer runs on int8 kernels (with a BatchNorm after a
quantized Dense folded into it, `norm_folding`, as the converter folds one only into a conv). One batch size per file: in jax 0.10
a composite under a symbolic batch does not lower.
"""
import contextlib
import functools
import operator
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from s3jax.deploy import norm_folding
from s3jax.deploy.export_format import Export, is_quantized
from s3jax.deploy.manifest import ExportError, file_entry, read_manifest, verified_path, write_manifest
from s3jax.deploy.runtimes import LITERT_INSTALL, interpreter_runner
from s3jax.errors import ConfigError
from s3jax.models.activation_point import ActivationPoint
from s3jax.models.quantized_inputs import ABS_MAX, SIGNED, STEP, unwrapped
from s3jax.quant.activations import calibrated_step
from s3jax.quant.tree import path_name
from s3jax.records.eval_program import eval_logits

MODES = ("float", "dynamic_int8", "full_int8")
# requirements-litert.txt, installed --no-deps: litert-converter pins an old typing-extensions through
# xdsl, which its conversion never imports.
INSTALL = LITERT_INSTALL
LAYERS = (nn.Conv, nn.Dense, nn.DenseGeneral)


def converter():
  """The converter's modules; a ConfigError naming the install command where they are missing."""
  try:
    from litert_converter import converter_api_ext
    from litert_converter.mlir import ir, passmanager
  except ImportError as err:
    raise ConfigError(f"LiteRT export needs the litert extra ({err}); install it with `{INSTALL}`.") from None
  return converter_api_ext, ir, passmanager


def storage_type(q) -> str | None:
  """'i4' or 'i8': the narrowest type holding every level of quantizer `q` over its smallest magnitude
  (not only those a kernel reaches); None where they pass int8's 127."""
  top = int(q.magnitudes()[-1] / q.magnitudes()[0])
  return "i4" if top <= 7 else "i8" if top <= 127 else None


def integer_levels(name: str, kernel) -> tuple[np.ndarray, np.ndarray, str, int]:
  """(integers, per-channel scale, 'i4' or 'i8', quantization dimension) with `integers * scale ==
  kernel.weights()`: the levels over the method's smallest magnitude (a power of two), and the scale times
  that unit. The type is the narrowest that holds every level of the method and width (not only those the
  kernel reaches); a ConfigError naming the layer where they fit neither."""
  q = kernel.quantizer
  unit = float(q.magnitudes()[0])
  ints = np.asarray(kernel.unscaled(), np.float64) / unit  # levels and unit are powers of two: exact
  dtype = storage_type(q)
  if dtype is None:
    raise ConfigError(f"{name}: {q.describe()} levels reach {int(q.magnitudes()[-1] / unit)} times {unit}, "
                      "beyond int8's 127; export it at a lower bit width, or without --litert.")
  factor = kernel.scale_factor()
  factor = np.ones(()) if factor is None else np.asarray(factor, np.float64)
  if factor.ndim > 1:
    raise ConfigError(f"{name}: a scale over {factor.ndim} output axes has no single LiteRT quantization "
                      "axis; export it with quant.scale=fixed, or without --litert.")
  # Per output channel (the last axis), so that the converter can fold a BatchNorm after it into the scale.
  scale = np.broadcast_to(unit * factor, ints.shape[-1:]).astype(np.float32)
  return ints.astype(np.int8), scale, dtype, ints.ndim - 1


def _fake_quant(x, dtype: str, scale, axis: int):
  """`x` (already on the grid) inside the composite the converter reads as a quantized tensor."""
  return jax.lax.composite(lambda x, **_: x, name="quant.fake_quant")(
      x, dtype=dtype, narrow_range=True, scale=np.asarray(scale, np.float32),
      zero_point=np.zeros(np.shape(scale), np.int32), quantization_dimension=np.int32(axis))


def _dynamic_int8(x):
  """An empty-scale composite: the layer's input, quantized to int8 at run time."""
  return jax.lax.composite(lambda x, **_: x, name="quant.fake_quant")(
      x, dtype="i8", narrow_range=False, scale=np.zeros((0,), np.float32), zero_point=np.zeros((0,), np.int32))


def _static_int8(x, scale: float, zero_point: int):
  """A per-tensor int8 composite: `x` on the grid `scale * (q - zero_point)`, q in [-128, 127], as int8
  activations (its body, the fake quantization, is what the converter replaces by QUANTIZE)."""
  def fake_quant(x, **_):
    return jnp.clip(jnp.round(x / scale), -128 - zero_point, 127 - zero_point) * scale

  return jax.lax.composite(fake_quant, name="quant.fake_quant")(
      x, dtype="i8", narrow_range=False, scale=np.asarray([scale], np.float32),
      zero_point=np.asarray([zero_point], np.int32))


def check_full_int8(aq) -> None:
  """A ConfigError unless activations quantized by `aq` are int8 grids: lsq or calibrated at 8 bits (an
  int8 tensor holds a narrower grid's codes but cannot clip at its ends, so 4-bit inputs would not be)."""
  if not aq.has_step or aq.bits != 8:
    raise ConfigError(f"--litert=full_int8 needs activations quantized to 8 bits (quant.activations=lsq or "
                      f"calibrated, activation_bits=8); this run's are {aq.describe()}. Use --litert=dynamic_int8.")


def static_input_grids(export: Export) -> dict[str, tuple[float, int]]:
  """{layer path: (scale, int8 zero point)} of each quantized layer input, from its learned or calibrated
  step and signedness: a signed 8-bit grid [-128, 127] is int8 at zero point 0, an unsigned one [0, 255] at
  -128. A ConfigError where the export's inputs are no 8-bit grid (`check_full_int8`)."""
  aq = export.activations
  check_full_int8(aq)
  grids = {}
  for layer in export.manifest["activations"]["layers"]:
    params, stats = (functools.reduce(operator.getitem, layer.split("/"), tree)
                     for tree in (export.params, export.batch_stats))
    signed = float(np.asarray(stats[SIGNED])) > 0
    if aq.kind == "lsq":
      step = float(np.asarray(params[STEP]))
    else:
      step = float(calibrated_step(np.asarray(stats[ABS_MAX]), aq.bits, signed))
    grids[layer] = (step, 0 if signed else -128)
  return grids


def lowbit_function(export: Export, mode: str, lowbit: bool = True):
  """images -> logits of the export with its quantized kernels as integer constants (`lowbit`; else the
  same weights as float32 constants, the LiteRT float baseline) and, for 'dynamic_int8', their layers'
  inputs quantized at run time; for 'full_int8', those inputs as int8 tensors of their learned grids
  (`static_input_grids`). Returns (function, {kernel path: its integer type})."""
  model = export.create_model()
  stored, plans = {}, {}  # {kernel path: its type}, {layer path: its plan}
  grids = static_input_grids(export) if mode == "full_int8" else {}

  def kernel(path, leaf):
    if not is_quantized(leaf):
      return np.asarray(leaf)
    name = path_name(path)
    plan = integer_levels(name, leaf)
    stored[name], plans[name.rsplit("/", 1)[0]] = plan[2], plan
    return plan

  planned = jax.tree_util.tree_map_with_path(kernel, export.params, is_leaf=is_quantized)
  is_plan = lambda x: isinstance(x, tuple)
  biases = norm_folding.fold_into_plans(export, unwrapped(model)[0], planned, plans) if mode == "full_int8" else {}
  folded_norms = {norm for _, norm in biases.values()}

  def weights(plan, height: bool = False):
    """The kernel (with a leading unit height for a 1-D conv run as 2-D), in its composite if low-bit."""
    if not is_plan(plan):
      return jnp.asarray(plan)[None] if height else jnp.asarray(plan)
    ints, scale, dtype, axis = plan
    if height:
      ints, axis = ints[None], axis + 1
    w = jnp.asarray(ints.astype(np.float32) * scale)  # exactly the export's weights
    return _fake_quant(w, dtype, scale, axis) if lowbit else w

  def apply(images):
    params = jax.tree.map(weights, planned, is_leaf=is_plan)

    def interceptor(next_fun, args, kwargs, context):
      module = context.module
      if isinstance(module, ActivationPoint) and "/".join(module.path) in grids:  # a residual summand
        return next_fun(_static_int8(args[0], *grids["/".join(module.path)]))
      if not (isinstance(module, (*LAYERS, nn.BatchNorm)) and context.method_name == "__call__"):
        return next_fun(*args, **kwargs)
      name = "/".join(module.path)
      if name in folded_norms:  # folded into the Dense before it
        return args[0]
      if mode == "dynamic_int8" and name in plans:
        annotate = _dynamic_int8
      elif name in grids:
        annotate = lambda x: _static_int8(x, *grids[name])  # noqa: E731
      else:
        annotate = lambda x: x  # noqa: E731
      if isinstance(module, nn.Conv) and len(module.kernel_size) == 1:
        kernel = weights(plans.get(name, module.variables["params"]["kernel"]), height=True)
        return _conv1d_as_2d(module, kernel, args[0], annotate)
      y = next_fun(annotate(args[0]), *args[1:], **kwargs)
      return y + biases[name][0] if name in biases else y

    flax_model, quantized_inputs = unwrapped(model)
    if grids:  # each grid's composite quantizes its input itself: LiteRT's QUANTIZE, not float ops
      quantized_inputs = contextlib.nullcontext()
    with quantized_inputs, nn.intercept_methods(interceptor):  # inputs quantized first, then annotated
      return eval_logits(flax_model, params, export.batch_stats, images)

  return apply, stored


def _conv1d_as_2d(module: nn.Conv, kernel, x, annotate):
  """The 1-D conv `module` over (batch, time, channels) as a 2-D conv over a unit height (TFLite has no
  1-D convolution), its input annotated (int8 at run time, or on a static grid) by `annotate`."""
  strides = module.strides or 1
  strides = (strides,) if isinstance(strides, int) else tuple(strides)
  padding = module.padding if isinstance(module.padding, str) else ((0, 0), *module.padding)
  conv = module.clone(parent=None, name=None, kernel_size=(1, *module.kernel_size), strides=(1, *strides),
                      padding=padding)
  x = x[:, None]
  variables = {"kernel": kernel, **({"bias": module.variables["params"]["bias"]} if module.use_bias else {})}
  return conv.apply({"params": variables}, annotate(x))[:, 0]


def convert(apply, input_shape, batch: int, dynamic: bool) -> bytes:
  """The LiteRT flatbuffer of `apply` at a fixed batch (signature 'serving_default': images -> logits)."""
  api, ir, passmanager = converter()
  spec = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
  text = jax.export.export(jax.jit(apply), platforms=("cpu",))(spec).mlir_module()
  context = ir.Context()
  api.prepare_mlir_context(context)
  with context:
    module = ir.Module.parse(text)
    api.set_signature(module.operation, signature_name="serving_default", input_names=["images"],
                      output_names=["logits"])
    config = api.ConvertToTFLConfig()
    config.model_origin_framework = "JAX"
    config.strict_qdq_mode = True  # what lowers the composites to quantized tensors
    config.qdq_conversion_mode = "DYNAMIC" if dynamic else "STATIC"
    try:
      api.run_convert_to_tfl_passes(module, passmanager.PassManager(), config)
      return bytes(api.export_flatbuffer_to_bytes(module.operation))
    except (RuntimeError, ValueError) as err:
      import litert_converter
      raise ConfigError(f"the LiteRT converter failed ({' '.join(str(err).split())[:200]}); check that "
                        f"litert-converter {litert_converter.__version__} reads the StableHLO of jax "
                        f"{jax.__version__}.") from None


def file_name(mode: str, batch: int) -> str:
  return f"model_{mode}_b{batch}.tflite"


def check_modes(modes, batches):
  """A ConfigError for an unknown mode or a batch < 1, and for a missing converter: before any work."""
  for mode in modes:
    if mode not in MODES:
      raise ConfigError(f"--litert={mode!r} is unknown; use a comma-separated list of {MODES}.")
  if not batches or any(int(b) < 1 for b in batches):
    raise ConfigError(f"--litert_batch={','.join(map(str, batches))} must list batch sizes >= 1.")
  converter()


def export_litert(export: Export, mode: str, batch: int) -> str:
  """Writes the export's LiteRT file for `mode` at `batch` into its directory, lists it in the manifest
  with its checksum, and returns its path."""
  check_modes((mode,), (batch,))
  apply, stored = lowbit_function(export, mode)
  content = convert(apply, export.input_shape, batch, dynamic=mode == "dynamic_int8")
  name = file_name(mode, batch)
  path = os.path.join(export.directory, name)
  with open(path, "wb") as f:
    f.write(content)
  manifest = read_manifest(export.directory)
  manifest.setdefault("litert", {})[f"{mode}_b{batch}"] = file_entry(
      export.directory, name, mode=mode, batch=batch, weight_types=sorted(set(stored.values())))
  write_manifest(export.directory, manifest)
  export.manifest = manifest
  return path


def litert_apply(directory: str, mode: str = "dynamic_int8"):
  """images -> logits by the export's LiteRT file of `mode` (its largest batch), any number of images:
  each call is cut into that batch, the last piece padded and its padding dropped."""
  manifest = read_manifest(directory)
  files = {k: v for k, v in manifest.get("litert", {}).items() if v["mode"] == mode}
  if not files:
    raise ExportError(f"{directory} has no LiteRT file for mode {mode!r}: export with --litert={mode}.")
  entry = max(files.values(), key=lambda e: e["batch"])
  with open(verified_path(directory, entry), "rb") as f:
    run = interpreter_runner(f.read())
  return lambda images: jnp.asarray(run(images))
