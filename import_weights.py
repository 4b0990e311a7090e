r"""Imports a torchvision or timm ResNet-18/34/50 state dict as a float s3jax checkpoint, to fine-tune from.

  python import_weights.py --weights=resnet50.safetensors --model=resnet50 --output=/tmp/r50_imagenet
  python train.py --config=configs/imagenet_r50.py --workdir=/tmp/r50_s3 --config.init_from=/tmp/r50_imagenet

The file is a state dict saved from PyTorch (`.safetensors`, or `.pth`/`.pt` when torch is installed); the
classes come from its `fc` layer. Writes an Orbax checkpoint of {'params', 'batch_stats'}, the form
`--config.init_from` takes (s3jax.models.pretrained has the name mapping).
"""
import os

from absl import flags

_WEIGHTS = flags.DEFINE_string("weights", None, "A torchvision/timm ResNet state dict: .safetensors or .pth.")
_MODEL = flags.DEFINE_string("model", None, "The s3jax ResNet of the same depth: resnet18, resnet34, resnet50, ...")
_OUTPUT = flags.DEFINE_string("output", None, "A new directory for the checkpoint.")
flags.mark_flags_as_required(["weights", "model", "output"])


def main(argv):
  del argv
  import jax
  import orbax.checkpoint as ocp

  from s3jax.errors import ConfigError
  from s3jax.models import create_model
  from s3jax.models.pretrained import read_state_dict, resnet_variables
  output = os.path.abspath(_OUTPUT.value)
  if os.path.exists(output):
    raise ConfigError(f"{output} exists; choose a new --output directory.")
  if not _MODEL.value.startswith("resnet") or "1d" in _MODEL.value:
    raise ConfigError(f"--model={_MODEL.value!r}: only the ImageNet ResNets (resnet18, resnet34, resnet50, "
                      "resnet101, resnet152) take torchvision weights.")
  state = read_state_dict(_WEIGHTS.value)
  if "fc.weight" not in state:
    raise ConfigError(f"{_WEIGHTS.value} has no fc.weight; is it a torchvision/timm ResNet state dict?")
  num_classes = state["fc.weight"].shape[0]
  variables = resnet_variables(state, create_model(_MODEL.value, num_classes))
  with ocp.PyTreeCheckpointer() as writer:  # written to a temporary directory, renamed when complete
    writer.save(output, variables)
  count = sum(x.size for x in jax.tree.leaves(variables["params"]))
  print(f"imported {_MODEL.value} ({count:,} parameters, {num_classes} classes) from {_WEIGHTS.value} to {output}")
  print(f"fine-tune it: python train.py --config=<config with model={_MODEL.value}> --workdir=<new workdir> "
        f"--config.init_from={output}")


if __name__ == "__main__":
  from s3jax.cli import run
  run(main, "rerun the same command")
