"""The bit stream of an export's packed codes: weight i's index in bits [i*w, (i+1)*w), least-significant
bit first, where stream bit j is bit (j mod 8) of byte j div 8; the last byte is zero-padded."""
import math

import numpy as np


def pack_indices(indices: np.ndarray, width: int) -> bytes:
  """Unsigned `indices` (each < 2**width) as a little-endian bit stream of `width` bits each."""
  indices = np.asarray(indices, np.uint8).reshape(-1)
  if indices.size and int(indices.max()) >= 2 ** width:
    raise ValueError(f"index {int(indices.max())} does not fit in {width} bits.")
  bits = np.unpackbits(indices[:, None], axis=1, count=width, bitorder="little")
  return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_indices(data: bytes, count: int, width: int) -> np.ndarray:
  """The inverse of `pack_indices`: `count` uint8 indices."""
  bits = np.unpackbits(np.frombuffer(data, np.uint8), count=count * width, bitorder="little")
  return np.packbits(bits.reshape(count, width), axis=1, bitorder="little").reshape(count)


def packed_size(count: int, width: int) -> int:
  return math.ceil(count * width / 8)


def code_table(q, codes: np.ndarray) -> tuple[list[int], int]:
  """The signed codes an index can stand for, and the index width in bits."""
  m = len(q.magnitudes())
  table = list(range(-m, 0)) + ([0] if q.has_zero else []) + list(range(1, m + 1))
  if len(table) > 2 ** q.bits and 0 in table and not np.any(codes == 0):
    table.remove(0)  # DeepShift-Q: 0 only where a latent is exactly 0
  return table, max(q.bits, math.ceil(math.log2(len(table))))
