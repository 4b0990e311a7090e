r"""Sizes of exported ResNets at each bit width: float32 model vs packed export (README 'Export and deploy').

  python benchmarks/export_sizes.py                       # ResNet-18 and ResNet-50, S3 at 2, 3 and 4 bits
  python benchmarks/export_sizes.py --models=resnet20 --bits=3 --num_classes=10 --image_size=32

Sizes do not depend on training, so each model is exported from its initialisation (1000 classes,
ImageNet stem). Every method at the same bit width packs to the same size (DeepShift-Q can need one more
bit on a layer that holds exact zeros). Prints a markdown table and one JSON line.
"""
import argparse
import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from s3jax import quant  # noqa: E402
from s3jax.export import write_export  # noqa: E402
from s3jax.models import create_model  # noqa: E402


def export_size(model_name: str, bits: int, num_classes: int, image_size: int, method: str = "s3") -> dict:
  model = create_model(model_name, num_classes)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, image_size, image_size, 3)), train=False))(
      jax.random.key(0))
  q = quant.quantizer(method, bits)
  params = quant.to_latents(variables["params"], quant.DEFAULT_RESNET_RULES, jax.random.key(1), quantizer=q)
  spec = {"shape": [image_size, image_size, 3], "mean": [0.0] * 3, "std": [1.0] * 3, "pixels": "-"}
  with tempfile.TemporaryDirectory() as directory:
    manifest = write_export(params, variables["batch_stats"], directory, model=model_name,
                            num_classes=num_classes, input_spec=spec, step=0)
  return {"model": model_name, "method": method, "bits": bits, **manifest["sizes"]}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="resnet18,resnet50")
  parser.add_argument("--bits", default="2,3,4")
  parser.add_argument("--num_classes", type=int, default=1000)
  parser.add_argument("--image_size", type=int, default=224)
  args = parser.parse_args(argv)
  rows = []
  print("| model | bits | float32 model | export | ratio | quantized kernels: float32 -> packed | ratio |")
  print("|---|---|---|---|---|---|---|")
  for model_name in args.models.split(","):
    for bits in (int(b) for b in args.bits.split(",")):
      row = export_size(model_name, bits, args.num_classes, args.image_size)
      rows.append(row)
      print(f"| {model_name} | {bits} | {row['float32_bytes'] / 1e6:.1f} MB | {row['export_bytes'] / 1e6:.2f} MB "
            f"| {row['ratio']:.2f}x | {4 * row['quantized_weights'] / 1e6:.1f} MB -> "
            f"{row['quantized_bytes'] / 1e6:.2f} MB | {row['quantized_ratio']:.2f}x |", flush=True)
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
