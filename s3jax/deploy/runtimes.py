"""Running the LiteRT and ONNX files an export holds, with their runtimes alone: no jax, no Flax, so a
deployment process (and each of `benchmarks/deploy_runtimes.py`'s peak-RAM children) loads only the
runtime it measures. Both runners take and return numpy arrays."""
import numpy as np

from s3jax.errors import ConfigError

# What `pip install` needs besides s3jax's own requirements, installed --no-deps (see each file).
LITERT_INSTALL = "pip install --no-deps -r requirements-litert.txt"
ONNX_INSTALL = "pip install --no-deps -r requirements-onnx.txt"
ONNX_MODES = ("float", "dynamic_int8")
ACCURACY_LEVEL = {"float": 1, "dynamic_int8": 4}  # ONNX Runtime: 1 = float32 compute, 4 = int8 compute


def interpreter_class():
  try:
    from ai_edge_litert.interpreter import Interpreter
  except ImportError as err:
    raise ConfigError(f"the LiteRT path needs ai-edge-litert ({err}); install it with `{LITERT_INSTALL}`.") from None
  return Interpreter


def interpreter_runner(content: bytes):
  """images -> logits by the LiteRT flatbuffer `content`, any number of images: cut into its batch, a last
  short piece padded with zeros and the padding dropped."""
  interpreter = interpreter_class()(model_content=content)
  interpreter.allocate_tensors()
  (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
  batch = int(inp["shape"][0])

  def run(images):
    images = np.asarray(images, np.float32)
    pieces = []
    for start in range(0, len(images), batch):
      piece = images[start:start + batch]
      if len(piece) < batch:
        piece = np.concatenate([piece, np.zeros((batch - len(piece), *piece.shape[1:]), np.float32)])
      interpreter.set_tensor(inp["index"], piece)
      interpreter.invoke()
      pieces.append(np.array(interpreter.get_tensor(out["index"]))[:len(images) - start])
    return np.concatenate(pieces)

  return run


def onnx_runtime():
  try:
    import onnxruntime
  except ImportError as err:
    raise ConfigError(f"the ONNX path needs onnxruntime ({err}); install it with `{ONNX_INSTALL}`.") from None
  return onnxruntime


def onnx_session(content: bytes, mode: str):
  """An ONNX Runtime session of the ONNX file `content`, its MatMulNBits set to `mode`'s accuracy level."""
  if mode not in ONNX_MODES:
    raise ConfigError(f"ONNX mode {mode!r} is unknown; use one of {ONNX_MODES}.")
  ort = onnx_runtime()
  try:
    import onnx
  except ImportError as err:
    raise ConfigError(f"the ONNX path needs onnx ({err}); install it with `{ONNX_INSTALL}`.") from None
  model = onnx.load_from_string(content)
  for node in model.graph.node:
    if node.op_type == "MatMulNBits":
      for attr in node.attribute:
        if attr.name == "accuracy_level":
          attr.i = ACCURACY_LEVEL[mode]
  options = ort.SessionOptions()
  options.log_severity_level = 3  # errors only: jax2onnx's shape hints draw merge warnings on 1-D convs
  return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def onnx_runner(session):
  """images -> logits by an ONNX Runtime `session`, any number of images at once (its batch is dynamic)."""
  name = session.get_inputs()[0].name
  return lambda images: session.run(None, {name: np.asarray(images, np.float32)})[0]
