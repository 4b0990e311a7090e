"""A trained shift network stored at its bit width: bit-packed codes, float parts, and a JSON manifest.

Layout of an export directory (format 's3jax-export', version 1):

  manifest.json                     what everything is (below), with a SHA-256 of every file
  params/<layer path>.codes         a quantized kernel: one `bits_per_weight`-bit index per weight
  params/<layer path>.scale.npy     its float scale, for scale='fixed' (scalar) or 'learned' (log, per channel)
  params/<path>.npy                 every float parameter (stem, classifier, BatchNorm scale/bias)
  batch_stats/<path>.npy            BatchNorm running statistics
  model.stablehlo                   the plain path with the weights baked in (written by s3jax.deploy.inference)

Packed codes: weights in the kernel's C order (Flax conv kernels are (kh, kw, in, out)); weight i holds
an index into the entry's `codes` list in bits [i*w, (i+1)*w) of the file, least-significant bit first,
where stream bit j is bit (j mod 8) of byte j div 8; the last byte is zero-padded. `codes[index]` is the
method's signed code (0 is the weight 0, +-j the j-th smallest magnitude) and `values[index]` the unscaled
weight, a power of two or 0. `w` is the bit width, except for a DeepShift-Q layer that holds any exact zero:
its 2^bits signed powers of two and 0 need w = bits + 1, and the manifest says so.

`load(directory)` checks every file against the manifest before anything is decoded: a missing,
truncated, edited or wrong-version file is one-line `ExportError` naming it, never a wrong prediction.
"""
import dataclasses
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from s3jax import quant
from s3jax.errors import ConfigError
from s3jax.models import QuantizedInputs, create_model
from s3jax.deploy.manifest import (FORMAT, MANIFEST, VERSION, ExportError, read_manifest, sha256,
                                   verified_path, write_manifest)
from s3jax.deploy.packing import code_table, pack_indices, packed_size, unpack_indices
from s3jax.quant.activations import ActivationQuantizer
from s3jax.quant.interface import is_latent
from s3jax.quant.tree import path_name

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedKernel:
  """A kernel as stored: signed int8 codes of `quantizer`, and its float scale (None for scale='none')."""
  codes: jax.Array
  scale: jax.Array | None
  quantizer: quant.Quantizer = dataclasses.field(metadata=dict(static=True))

  def unscaled(self, dtype=jnp.float32) -> jax.Array:
    return self.quantizer.decode(self.codes, dtype)

  def scale_factor(self):
    """What multiplies the unscaled weight: the same value the trainer's `Scaled.factor()` gives."""
    if self.scale is None:
      return None
    return quant.Scaled(None, self.scale, self.quantizer.scale == "learned").factor()

  def weights(self, dtype=jnp.float32) -> jax.Array:
    """The kernel the trainer materializes (bit for bit where both run the same program)."""
    w = self.unscaled(dtype)
    return w if self.scale is None else w * self.scale_factor().astype(self.scale.dtype)

  def latent(self, dtype=jnp.float32):
    """Latents of the trainer's structure whose materialized weight is `weights()` (`Quantizer.from_codes`)."""
    return self.quantizer.from_codes(self.codes, self.scale, dtype)


def from_latents(params):
  """The params tree with every latent replaced by its `QuantizedKernel` (codes and scale). The codes come
  from one jitted program: op by op, each kernel shape compiled a dozen programs of its own (a ResNet-8's
  3 s of a 4 s export)."""
  latents = [x for x in jax.tree.leaves(params, is_leaf=is_latent) if is_latent(x)]
  codes = iter(jax.jit(lambda xs: [quant.quantizer_of(x).codes(x) for x in xs])(latents))

  def convert(x):
    if not is_latent(x):
      return np.asarray(x)
    scale = np.asarray(x.scale) if isinstance(x, quant.Scaled) else None
    return QuantizedKernel(np.asarray(next(codes)), scale, quant.quantizer_of(x))

  return jax.tree.map(convert, params, is_leaf=is_latent)


def is_quantized(x) -> bool:
  return isinstance(x, QuantizedKernel)


def latent_tree(params):
  """Each `QuantizedKernel` as latents of the trainer's structure: what its eval program runs on."""
  return jax.tree.map(lambda x: x.latent() if is_quantized(x) else x, params, is_leaf=is_quantized)


def decode_tree(params):
  """Float weights: each `QuantizedKernel` decoded (exactly the trainer's materialized kernel)."""
  return jax.tree.map(lambda x: x.weights() if is_quantized(x) else x, params, is_leaf=is_quantized)


def decoded_arrays(params):
  """`decode_tree` as numpy arrays, decoded in one jitted program: the float constants of an artifact."""
  return jax.tree.map(np.asarray, jax.jit(decode_tree)(params))


@dataclasses.dataclass
class Export:
  """A loaded export: the manifest, and params (with `QuantizedKernel` leaves) and batch_stats trees."""
  manifest: dict
  params: dict
  batch_stats: dict
  directory: str = ""

  @property
  def input_shape(self) -> tuple[int, int, int]:
    spec = self.manifest["input"]
    return tuple(spec["shape"])

  def normalize(self, images: np.ndarray) -> np.ndarray:
    """Pixels in the manifest's range -> the model's input ((x - mean) / std)."""
    spec = self.manifest["input"]
    return ((np.asarray(images, np.float32) - np.asarray(spec["mean"], np.float32))
            / np.asarray(spec["std"], np.float32))

  @property
  def activations(self) -> ActivationQuantizer:
    """The quantizer of the chosen layers' inputs (kind 'none' for an export that quantizes none)."""
    recorded = {k: v for k, v in self.manifest.get("activations", {}).items() if k != "layers"}
    return ActivationQuantizer(**recorded)

  def create_model(self):
    """The Flax model; where the export quantizes activations, with its layers' inputs quantized (by exact
    path) as in training."""
    model = create_model(self.manifest["model"], self.manifest["num_classes"])
    if not self.activations.enabled:
      return model
    # a layer's rule matches its kernel's path, an activation point's its own
    layers = tuple(re.escape(layer) + "(/kernel)?" for layer in self.manifest["activations"]["layers"])
    return QuantizedInputs(model, layers, self.activations)


# ---------------------------------------------------------------------------------------------- writing

def _flat(tree, prefix: str) -> list[tuple[str, object]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_quantized)[0]
  return [(f"{prefix}/{path_name(p)}", x) for p, x in leaves]


def _write_npy(directory: str, name: str, value) -> dict:
  path = os.path.join(directory, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  value = np.asarray(value)
  np.save(path, value, allow_pickle=False)
  return {"file": name, "dtype": value.dtype.name, "shape": list(value.shape), "sha256": sha256(path)}


def write_export(params, batch_stats, output: str, *, model: str, num_classes: int, input_spec: dict,
                 step: int, training_config: dict | None = None, activations: dict | None = None) -> dict:
  """Writes `params` (latents or float) and `batch_stats` as an export into `output`; returns the manifest.

  `input_spec`: {'shape': [h, w, c], 'mean', 'std', 'pixels': how raw pixels are scaled before that}.
  `activations`: the inputs' quantizer (`ActivationQuantizer.describe()`) and the 'layers' it applies to.
  """
  os.makedirs(output, exist_ok=True)
  arrays, quantizers = {}, set()
  float32_bytes = stored_bytes = quantized_weights = quantized_bytes = 0
  for name, x in _flat(from_latents(params), "params") + _flat(batch_stats, "batch_stats"):
    if is_quantized(x):
      q = x.quantizer
      quantizers.add(dataclasses.replace(q, layout="auto", dense_in_axes=1))
      codes = np.asarray(x.codes)
      table, width = code_table(q, codes)
      indices = np.searchsorted(np.asarray(table), codes).astype(np.uint8)  # the table is ascending
      path = os.path.join(output, name + ".codes")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(pack_indices(indices, width))
      values = [float(v) for v in q.decode(np.asarray(table, np.int8))]  # powers of two: exact
      entry = {"kind": "codes", "file": name + ".codes", "shape": list(codes.shape),
               "bits_per_weight": width, "codes": table, "values": values,
               "bytes": os.path.getsize(path), "sha256": sha256(path)}
      if width > q.bits:
        entry["note"] = f"exact zeros besides the {2 ** q.bits} signed powers of two: {width} bits per weight"
      stored_bytes += entry["bytes"]
      quantized_bytes += entry["bytes"]
      quantized_weights += codes.size
      float32_bytes += 4 * codes.size
      if x.scale is not None:
        entry["scale"] = {**_write_npy(output, name + ".scale.npy", x.scale),
                          "learned": q.scale == "learned"}
        scale_bytes = int(np.asarray(x.scale).nbytes)
        stored_bytes += scale_bytes
        quantized_bytes += scale_bytes
      arrays[name] = entry
    else:
      entry = _write_npy(output, name + ".npy", x)
      entry["kind"] = "float"
      arrays[name] = entry
      nbytes = int(np.asarray(x).nbytes)
      stored_bytes += nbytes
      float32_bytes += nbytes
  if len({(q.method, q.bits, q.scale) for q in quantizers}) > 1:
    raise ConfigError(f"an export holds one method at one bit width; these params mix "
                      f"{sorted(q.describe() for q in quantizers)}.")
  q = next(iter(quantizers), quant.FULL_PRECISION)
  files = [e["file"] for e in arrays.values()] + [e["scale"]["file"] for e in arrays.values() if "scale" in e]
  files_bytes = sum(os.path.getsize(os.path.join(output, name)) for name in files)  # with .npy headers
  manifest = {
      "format": FORMAT, "version": VERSION,
      "model": model, "num_classes": int(num_classes),
      "method": q.method, "bits": q.bits, "scale": q.scale, "levels": [float(v) for v in q.levels()],
      "input": input_spec, "step": int(step),
      "sizes": {"float32_bytes": float32_bytes, "export_bytes": stored_bytes,
                "ratio": float32_bytes / max(stored_bytes, 1), "files_bytes": files_bytes,
                "quantized_weights": quantized_weights, "quantized_bytes": quantized_bytes,
                "quantized_ratio": 4 * quantized_weights / max(quantized_bytes, 1)},
      "arrays": arrays,
      "training_config": training_config or {},
  }
  if activations:
    manifest["activations"] = activations
  write_manifest(output, manifest)
  return manifest


# ---------------------------------------------------------------------------------------------- reading

def _load_npy(directory: str, entry: dict) -> np.ndarray:
  value = np.load(verified_path(directory, entry), allow_pickle=False)
  if list(value.shape) != entry["shape"] or value.dtype.name != entry["dtype"]:
    raise ExportError(f"{os.path.join(directory, entry['file'])} holds {value.dtype.name}{list(value.shape)}"
                      f", not the manifest's {entry['dtype']}{entry['shape']}; export the model again.")
  return value


def _load_codes(directory: str, entry: dict, q: quant.Quantizer) -> QuantizedKernel:
  path = verified_path(directory, entry)
  count = int(np.prod(entry["shape"], dtype=np.int64))
  width = entry["bits_per_weight"]
  with open(path, "rb") as f:
    data = f.read()
  if len(data) != packed_size(count, width):
    raise ExportError(f"{path} has {len(data)} bytes, not the {packed_size(count, width)} its shape needs.")
  indices = unpack_indices(data, count, width)
  table = np.asarray(entry["codes"], np.int8)
  if indices.size and int(indices.max()) >= len(table):
    raise ExportError(f"{path} holds index {int(indices.max())} beyond its {len(table)} codes.")
  codes = table[indices].reshape(entry["shape"])
  scale = _load_npy(directory, entry["scale"]) if "scale" in entry else None
  return QuantizedKernel(codes, scale, q)


def load(directory: str) -> Export:
  """Reads an export written by `write_export`, checking every file against the manifest."""
  manifest = read_manifest(directory)
  try:
    q = quant.quantizer(manifest["method"], manifest["bits"], scale=manifest["scale"])
  except ConfigError as err:
    raise ExportError(f"{os.path.join(directory, MANIFEST)}: {err}") from None
  flat = {}
  for name, entry in manifest["arrays"].items():
    if entry.get("kind") == "codes":
      if not isinstance(q, quant.Quantizer):
        raise ExportError(f"{os.path.join(directory, MANIFEST)} lists codes for {name} in a float export.")
      flat[name] = _load_codes(directory, entry, q)
    else:
      flat[name] = _load_npy(directory, entry)
  tree = traverse_util.unflatten_dict(flat, sep="/")
  return Export(manifest, tree.get("params", {}), tree.get("batch_stats", {}), directory)
