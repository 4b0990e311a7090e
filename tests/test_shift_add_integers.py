"""shift_add on fixed-point layer inputs: integer in, integer out per layer, against numpy's int64 products."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import random_variables
from s3jax import quant
from s3jax.deploy.export_format import load, write_export
from s3jax.deploy.inference import integer_shift_add_layer, plain_apply, shift_add_apply
from s3jax.models import QuantizedInputs, activation_layers, create_model
from s3jax.quant import ActivationQuantizer
from s3jax.quant.activations import round_to_fixed


@pytest.mark.parametrize("integer_bits,fraction_bits", [(16, 16), (6, 3)])
def test_shift_add_runs_fixed_point_inputs_in_integers(integer_bits, fraction_bits, tmp_path):
  """DeepShift-PS at 3 bits with fixed-point layer inputs: each such layer's integer sums equal numpy's
  int64 products exactly, and its logits the plain path's within float rounding."""
  aq = ActivationQuantizer("fixed_point", integer_bits=integer_bits, fraction_bits=fraction_bits)
  q = quant.quantizer("deepshift_ps", 3)
  levels = np.asarray(q.magnitudes())                                 # 1/4, 1/2, 1
  rng = np.random.default_rng(0)
  kernel = (rng.choice(np.concatenate([-levels, [0], levels]), (12, 5))).astype(np.float32)
  x = np.asarray(round_to_fixed(jnp.asarray(rng.standard_normal((3, 12)) * 2 ** (integer_bits - 2), jnp.float32),
                                integer_bits, fraction_bits))
  exponents = tuple(int(k) for k in np.log2(levels))
  masks = jnp.stack([jnp.where(jnp.abs(kernel) == 2.0 ** k, jnp.sign(kernel), 0.0) for k in exponents])
  with jax.enable_x64(True):
    y_q, unit = integer_shift_add_layer(nn.Dense(5), exponents, masks, jnp.asarray(x), fraction_bits)
    got = np.asarray(y_q)
  want = (x.astype(np.float64) * 2.0 ** fraction_bits).astype(np.int64) @ (kernel * 4).astype(np.int64)
  assert got.dtype == np.int64 and unit == -2 - fraction_bits
  np.testing.assert_array_equal(got, want)

  params, batch_stats = random_variables("resnet8", (8, 8, 1), q)
  net = QuantizedInputs(create_model("resnet8", 10), ("stage.*conv.*/kernel",), aq)
  images = jax.random.normal(jax.random.key(2), (4, 8, 8, 1)) * 4
  layers = activation_layers(net, {"params": params, "batch_stats": batch_stats}, images, train=False)
  write_export(params, batch_stats, str(tmp_path), model="resnet8", num_classes=10, step=0,
               input_spec={"shape": [8, 8, 1], "mean": [0.0], "std": [1.0], "pixels": "test"},
               activations={**aq.describe(), "layers": list(layers)})
  loaded = load(str(tmp_path))
  shift_add = shift_add_apply(loaded)
  reference = np.asarray(plain_apply(loaded)(images))
  logits = np.asarray(shift_add(images))
  assert shift_add.integer_layers == set(layers) and len(layers) == 8 and logits.dtype == np.float32
  np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
