r"""Sizes of exported ResNets at each bit width: float32 model vs packed export (docs/export.md).

  python benchmarks/export_sizes.py                       # ResNet-18 and ResNet-50, S3 at 2, 3 and 4 bits
  python benchmarks/export_sizes.py --models=resnet20 --bits=3 --num_classes=10 --image_size=32

Sizes do not depend on training, so each model is exported from its initialisation (1000 classes,
ImageNet stem). Every method at the same bit width packs to the same size (DeepShift-Q can need one more
bit on a layer that holds exact zeros). Prints a markdown table and one JSON line.
"""
import json
import tempfile

from absl import app, flags

from benchlib import initial_variables
from s3jax.cli import parse_flags
from s3jax.deploy.export_format import write_export


def export_size(model_name: str, bits: int, num_classes: int, image_size: int, method: str = "s3") -> dict:
  _, params, batch_stats = initial_variables(model_name, image_size, bits, method, num_classes)
  spec = {"shape": [image_size, image_size, 3], "mean": [0.0] * 3, "std": [1.0] * 3, "pixels": "-"}
  with tempfile.TemporaryDirectory() as directory:
    manifest = write_export(params, batch_stats, directory, model=model_name,
                            num_classes=num_classes, input_spec=spec, step=0)
  return {"model": model_name, "method": method, "bits": bits, **manifest["sizes"]}


def main(argv):
  del argv
  args = flags.FLAGS
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


def _define_flags():
  flags.DEFINE_string("models", "resnet18,resnet50", "Comma-separated model names.")
  flags.DEFINE_string("bits", "2,3,4", "Comma-separated bit widths.")
  flags.DEFINE_integer("num_classes", 1000, "Classifier outputs.")
  flags.DEFINE_integer("image_size", 224, "Image height and width in pixels.")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=parse_flags)
