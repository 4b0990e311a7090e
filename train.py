"""Trains an S3 ResNet; the trainer lands with the trainer issue."""
import sys

if __name__ == "__main__":
  print("usage: python train.py --config=configs/<name>.py --workdir=<dir>  (trainer not yet available)")
  sys.exit(2)
