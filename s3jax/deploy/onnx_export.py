"""An export as an ONNX file whose low-bit Dense kernels are ONNX Runtime's 4-bit `MatMulNBits`.

`jax2onnx` converts the plain path (the trainer's eval program, `eval_logits`, on the decoded weights)
with a symbolic batch. Then every MatMul or Gemm whose weight is a quantized Dense kernel with levels in
[-7, 7] (over the method's smallest magnitude, as for LiteRT's int4) becomes `com.microsoft.MatMulNBits`:
4-bit integers `level + 8` (its default zero point), packed two to a byte, and one float scale per output
channel (the unit times the kernel's scale), so that its dequantized weight is the export's exactly. Conv
kernels, which ONNX Runtime has no low-bit kernel for, and other kernels stay float32.

Modes (ONNX Runtime's `accuracy_level` of each MatMulNBits, set when the file is loaded): 'float'
computes in float32 (equal to the plain path to float rounding); 'dynamic_int8' quantizes each such
layer's input to int8 at run time (the file is written with this one, the fast one).
"""
import importlib.metadata
import os

import jax
import jax.numpy as jnp
import numpy as np

from s3jax.deploy.export_format import Export, decoded_arrays, is_quantized
from s3jax.deploy.litert import integer_levels, storage_type
from s3jax.deploy.manifest import ExportError, add_file, read_manifest, verified_path
from s3jax.deploy.runtimes import ACCURACY_LEVEL, ONNX_INSTALL, onnx_runner, onnx_runtime, onnx_session
from s3jax.errors import ConfigError
from s3jax.quant.tree import path_name
from s3jax.records.eval_program import eval_logits

ONNX_FILE = "model.onnx"
INSTALL = ONNX_INSTALL
BLOCK = 32  # MatMulNBits' block along the input axis (one scale per output channel: repeated per block)
IR_VERSION = 10  # what onnxruntime 1.31 reads (onnx 1.23 writes 11 by default)


def _modules():
  try:
    import onnx
    from jax2onnx import to_onnx
  except ImportError as err:
    raise ConfigError(f"ONNX export needs the onnx extra ({err}); install it with `{INSTALL}`.") from None
  return onnx, to_onnx


def _version() -> str:
  return importlib.metadata.version("jax2onnx")  # the package itself has no __version__


def check_installed():
  """A ConfigError naming the install command where jax2onnx, onnx or onnxruntime is missing."""
  _modules()
  onnx_runtime()


def float_function(export: Export, weights=None):
  """images -> logits: the plain path on the decoded float32 weights (`decoded_arrays`, or `weights` if
  already decoded), closed over as constants."""
  model = export.create_model()
  weights = decoded_arrays(export.params) if weights is None else weights
  return lambda images: eval_logits(model, weights, export.batch_stats, images)


def packed_4bit(ints: np.ndarray, scale: np.ndarray):
  """(B, scales) of MatMulNBits for the (K, N) integer kernel `ints` in [-7, 7] with per-column `scale`:
  B[n, block, byte] holds `ints[k, n] + 8` for k = 2*byte (low nibble) and 2*byte + 1 (high nibble) of
  the block, the input axis padded with the zero point to whole blocks."""
  k, n = ints.shape
  blocks = -(-k // BLOCK)
  q = np.full((n, blocks * BLOCK), 8, np.uint8)
  q[:, :k] = (ints.astype(np.int16) + 8).T
  q = q.reshape(n, blocks, BLOCK)
  return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8), np.repeat(scale[:, None], blocks, 1).ravel()


def _nbits_plan(export: Export, weights) -> dict[bytes, tuple[str, np.ndarray, np.ndarray]]:
  """{float32 bytes of a Dense kernel as in `weights` (the graph's initializer): (its path, integers,
  scale)} for each quantized 2-D kernel whose method's levels fit 4 bits."""
  plan = {}

  def visit(path, leaf, weight):
    if is_quantized(leaf) and np.ndim(leaf.codes) == 2 and storage_type(leaf.quantizer) == "i4":
      name = path_name(path)
      ints, scale, _, _ = integer_levels(name, leaf)
      plan[np.asarray(weight, np.float32).tobytes()] = (name, ints, scale)

  jax.tree_util.tree_map_with_path(visit, export.params, weights, is_leaf=is_quantized)
  return plan


def to_matmul_nbits(model, plan, accuracy_level: int) -> list[str]:
  """Rewrites, in place, each MatMul/Gemm of `model` whose weight initializer is in `plan` into
  MatMulNBits (plus an Add for a Gemm's bias); returns the kernel paths rewritten."""
  from onnx import helper, numpy_helper
  graph = model.graph
  initializers = {t.name: t for t in graph.initializer}
  done, nodes = [], []
  for node in graph.node:
    weight = initializers.get(node.input[1]) if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    value = None if weight is None else numpy_helper.to_array(weight)
    bias_as_is = len(node.input) < 3 or attrs.get("beta", 1.0) == 1.0  # jax2onnx writes beta 0 without one
    plain = attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and bias_as_is
    if value is not None and value.ndim == 2 and plain:
      value = value.T if attrs.get("transB", 0) else value
      entry = plan.get(np.ascontiguousarray(value, np.float32).tobytes())
    else:
      entry = None
    if entry is None:
      nodes.append(node)
      continue
    name, ints, scale = entry
    packed, scales = packed_4bit(ints, scale)
    stem = f"nbits_{len(done)}"
    graph.initializer.extend([numpy_helper.from_array(packed, f"{stem}_B"),
                              numpy_helper.from_array(scales, f"{stem}_scales")])
    out = node.output[0] if len(node.input) < 3 else f"{stem}_out"
    nodes.append(helper.make_node("MatMulNBits", [node.input[0], f"{stem}_B", f"{stem}_scales"], [out],
                                  domain="com.microsoft", name=f"{name}:MatMulNBits", K=ints.shape[0],
                                  N=ints.shape[1], bits=4, block_size=BLOCK, accuracy_level=accuracy_level))
    if len(node.input) >= 3:  # Gemm's bias (beta 1)
      nodes.append(helper.make_node("Add", [out, node.input[2]], [node.output[0]]))
    done.append(name)
  del graph.node[:]
  graph.node.extend(nodes)
  used = {i for n in graph.node for i in n.input}
  kept = [t for t in graph.initializer if t.name in used]
  del graph.initializer[:]
  graph.initializer.extend(kept)
  if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
  return done


def export_onnx(export: Export) -> str:
  """Writes the export's model.onnx (images -> logits, a symbolic batch), lists it in the manifest, returns
  its path."""
  _, to_onnx = _modules()
  if export.activations.enabled:  # its plugins run the layers in place of Flax's, past the interceptor
    raise ConfigError(f"ONNX export of quantized activations ({export.activations.kind}) is not supported "
                      f"(jax2onnx {_version()} replaces the layers whose inputs they quantize); export without "
                      "--onnx, or with --litert.")
  weights = decoded_arrays(export.params)
  try:
    model = to_onnx(float_function(export, weights), [("batch", *export.input_shape)], input_names=["images"],
                    output_names=["logits"])
  except Exception as err:  # jax2onnx raises plain exceptions for primitives it has no rule for
    raise ConfigError(f"jax2onnx {_version()} could not convert this model "
                      f"({' '.join(str(err).split())[:200]}); export without --onnx.") from None
  rewritten = to_matmul_nbits(model, _nbits_plan(export, weights), ACCURACY_LEVEL["dynamic_int8"])
  model.ir_version = min(model.ir_version, IR_VERSION)
  content = model.SerializeToString()
  checked_session(content, "dynamic_int8")
  path = os.path.join(export.directory, ONNX_FILE)
  with open(path, "wb") as f:
    f.write(content)
  export.manifest = add_file(export.directory, "onnx", ONNX_FILE, input_shape=["batch", *export.input_shape],
                             matmul_nbits=rewritten, accuracy_level=ACCURACY_LEVEL["dynamic_int8"])
  return path


def checked_session(content: bytes, mode: str):
  """`onnx_session`, or a ConfigError in one line where ONNX Runtime refuses the graph jax2onnx wrote (seen
  with jax2onnx 0.17.1 on ResNet-20: a shape error at a residual Add)."""
  try:
    return onnx_session(content, mode)
  except Exception as err:  # onnxruntime's Fail/InvalidGraph carry no common public base
    raise ConfigError(f"ONNX Runtime refuses the graph jax2onnx {_version()} wrote for this model "
                      f"({' '.join(str(err).split())[-160:]}); export without --onnx.") from None


def onnx_apply(directory: str, mode: str = "dynamic_int8"):
  """images -> logits by the export's model.onnx under ONNX Runtime, any number of images."""
  manifest = read_manifest(directory)
  if "onnx" not in manifest:
    raise ExportError(f"{directory} has no {ONNX_FILE}: export with --onnx.")
  with open(verified_path(directory, manifest["onnx"]), "rb") as f:
    run = onnx_runner(onnx_session(f.read(), mode))
  return lambda images: jnp.asarray(run(images))
