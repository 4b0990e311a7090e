"""Pretrained ResNet weights from PyTorch: a torchvision or timm ResNet state dict (a `.safetensors` file,
or a `.pth`/`.pt` file when torch is installed) as s3jax ResNet params and BatchNorm statistics.

s3jax's ImageNet ResNets follow torchvision's topology (v1.5, see `s3jax.models.resnet`), and timm's
`resnet18/34/50` use the same parameter names, so the import is a renaming and a transposition:
  conv1 / bn1                          -> stem_conv / stem_bn
  layer<i>.<j>.conv<k> / .bn<k>        -> stage<i>_block<j>/conv<k> / bn<k>
  layer<i>.<j>.downsample.0 / .1       -> stage<i>_block<j>/downsample_conv / downsample_bn
  fc                                   -> head
Conv kernels go from (out, in, kh, kw) to (kh, kw, in, out), the dense kernel from (out, in) to
(in, out); BatchNorm weight/bias/running_mean/running_var become scale/bias and mean/var. Nothing is
downloaded: the file is the user's.
"""
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from s3jax.errors import ConfigError

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
       "running_var": ("batch_stats", "var")}
_IGNORED = ("num_batches_tracked",)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """{name: array} of a `.safetensors` file, or of a `.pth`/`.pt`/`.bin` file through torch (weights only).
  A 'module.' prefix (DataParallel) is dropped."""
  if not os.path.isfile(path):
    raise ConfigError(f"{path} is not a file; give a .safetensors or .pth state dict.")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    try:
      state = load_file(path)
    except Exception as err:  # pylint: disable=broad-except  (SafetensorError, or a header that is not JSON)
      raise ConfigError(f"{path} is not a readable .safetensors file ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}); is it cut short? Download or save it again.") from None
  else:
    try:
      import torch
    except ImportError:
      raise ConfigError(f"reading {os.path.basename(path)} needs torch (pip install torch); or save the state "
                        "dict as .safetensors, which needs no torch.") from None
    try:
      state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pylint: disable=broad-except
      raise ConfigError(f"{path} is not a torch state dict ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}); is it cut short? Download or save it again.") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
      raise ConfigError(f"{path} holds a {type(state).__name__}, not a state dict; save model.state_dict().")
    state = {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}
  return {k.removeprefix("module."): np.asarray(v) for k, v in state.items()}


def _target(name: str) -> tuple[str, tuple[str, ...], str] | None:
  """(collection, module path, leaf) of a torch parameter name, or None for one to ignore."""
  *module, leaf = name.split(".")
  if leaf in _IGNORED:
    return None
  module = ".".join(module)
  if module == "fc":
    return "params", ("head",), {"weight": "kernel", "bias": "bias"}[leaf]
  if module in ("conv1", "bn1"):
    path = ("stem_conv",) if module == "conv1" else ("stem_bn",)
  else:
    match = re.fullmatch(r"layer(\d+)\.(\d+)\.(conv\d|bn\d|downsample\.0|downsample\.1)", module)
    if match is None:
      raise ConfigError(f"{name} is not a parameter of a torchvision/timm ResNet; is this a ResNet state dict?")
    inner = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(match[3], match[3])
    path = (f"stage{match[1]}_block{match[2]}", inner)
  if "conv" in path[-1]:
    if leaf != "weight":
      raise ConfigError(f"{name}: s3jax's ResNet convs have no bias.")
    return "params", path, "kernel"
  collection, leaf = _BN[leaf]
  return collection, path, leaf


def _layout(array: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == "kernel" and array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if leaf == "kernel" and array.ndim == 2:
    return array.T
  return array


def resnet_variables(state: dict[str, np.ndarray], model) -> dict:
  """{'params', 'batch_stats'} for the Flax ResNet `model` from a torchvision/timm state dict. Every
  variable of the model must come from the file with its shape, and every file entry must be used:
  otherwise a ConfigError naming the first that does not fit."""
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  expected = {(c, *map(str, [k.key for k in path])): x
              for c in ("params", "batch_stats") for path, x in jax.tree_util.tree_flatten_with_path(abstract[c])[0]}
  targets = {}
  for name in state:  # names first: another depth is reported as such, not as a shape
    target = _target(name)
    if target is None:
      continue
    collection, path, leaf = target
    key = (collection, *path, leaf)
    if key not in expected:
      raise ConfigError(f"{name} has no place in this model (no {'/'.join(key[1:])}); is it the same "
                        "ResNet depth?")
    targets[key] = name
  found = {}
  for key, name in targets.items():
    value = _layout(state[name], key[-1])
    if value.shape != expected[key].shape:
      raise ConfigError(f"{name} has shape {state[name].shape}, which gives {value.shape} for "
                        f"{'/'.join(key[1:])}; the model wants {expected[key].shape}: another ResNet depth or "
                        "number of classes?")
    found[key] = jnp.asarray(value, expected[key].dtype)
  missing = sorted(set(expected) - set(found))
  if missing:
    raise ConfigError(f"the state dict has nothing for {'/'.join(missing[0][1:])} ({len(missing)} variables "
                      "missing); is it the same ResNet depth?")
  variables = {"params": {}, "batch_stats": {}}
  for (collection, *path), value in found.items():
    node = variables[collection]
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = value
  return variables
