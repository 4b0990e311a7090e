"""torchvision/timm ResNet weights imported into s3jax (s3jax.models.pretrained), checked against
torchvision's own forward pass on the same weights (torch's CPU build is a test-only dependency)."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from helpers import REPO, cli_env
from s3jax.errors import ConfigError
from s3jax.models import create_model
from s3jax.models.pretrained import read_state_dict, resnet_variables
from s3jax.models.resnet import Bottleneck, ResNet
from s3jax.training.init_from import read_float_variables


def torchvision_models():
  """torchvision.models. Its C++ ops (nms and the like) play no part in a ResNet: where the wheel's ops
  library does not load beside torch's CPU build, their schemas are declared so that the import goes on."""
  try:
    import torchvision
  except RuntimeError as err:  # "operator torchvision::nms does not exist"
    if "torchvision::" not in str(err):
      raise
    for name in [m for m in sys.modules if m.startswith("torchvision")]:
      del sys.modules[name]
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
      library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    torchvision_models.library = library  # kept alive: the definitions go with it
    import torchvision
  return torchvision.models


def torch_resnet(name):
  """A torchvision ResNet with random weights and BatchNorm statistics far from their defaults."""
  models = torchvision_models()
  torch.manual_seed(0)
  if name == "bottleneck":  # ResNet-50's blocks, one per stage, 10 classes: the same mapping, less work
    model = models.resnet.ResNet(models.resnet.Bottleneck, [1, 1, 1, 1], num_classes=10)
  else:
    model = getattr(models, name)()
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.normal_(0, 0.2)
        module.running_var.uniform_(0.5, 2.0)
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.2)
  return model.eval()


@pytest.mark.parametrize("name,suffix", [("resnet18", ".safetensors"), ("bottleneck", ".pth")])
def test_imported_resnet_computes_torchvisions_logits(name, suffix, tmp_path):
  model = torch_resnet(name)
  path = str(tmp_path / f"weights{suffix}")
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
  ours = ResNet((1, 1, 1, 1), Bottleneck, 10) if name == "bottleneck" else create_model(name, 1000)
  variables = resnet_variables(read_state_dict(path), ours)
  images = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
  with torch.no_grad():
    expected = model(torch.from_numpy(images)).numpy()
  got = jax.jit(lambda v, x: ours.apply(v, x, train=False))(variables, jnp.asarray(images.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("name", ["resnet34", "resnet50"])
def test_every_torchvision_depth_imports(name):
  state = {k: v.numpy() for k, v in getattr(torchvision_models(), name)().state_dict().items()}
  variables = resnet_variables(state, create_model(name, 1000))
  np.testing.assert_array_equal(variables["params"]["stage4_block1"]["conv2"]["kernel"],
                                state["layer4.1.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["batch_stats"]["stage2_block0"]["downsample_bn"]["var"],
                                state["layer2.0.downsample.1.running_var"])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("keep", [0.33, 0.0])
def test_a_cut_short_or_empty_state_dict_is_one_error_naming_the_file(tmp_path, suffix, keep):
  whole = tmp_path / f"whole{suffix}"
  state = {k: v.contiguous() for k, v in torch_resnet("bottleneck").state_dict().items()}
  save_file(state, str(whole)) if suffix == ".safetensors" else torch.save(state, whole)
  cut = tmp_path / f"cut{suffix}"
  cut.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * keep)])
  with pytest.raises(ConfigError, match=rf"^{cut} is not a (readable .safetensors file|torch state dict) .*cut short"):
    read_state_dict(str(cut))


def test_import_cli_writes_what_init_from_reads_and_refuses_another_depth(tmp_path):
  bottleneck = str(tmp_path / "bottleneck.safetensors")
  save_file({k: v.contiguous() for k, v in torch_resnet("bottleneck").state_dict().items()}, bottleneck)
  with pytest.raises(ConfigError, match=r"layer1.0.bn3.bias has no place in this model \(no stage1_block0/bn3/bias\)"):
    resnet_variables(read_state_dict(bottleneck), create_model("resnet18", 10))
  with pytest.raises(ConfigError, match=r"nothing for stage1_block1/.* is it the same ResNet depth"):
    resnet_variables(read_state_dict(bottleneck), create_model("resnet50", 10))

  def import_weights(weights, model, output):
    cmd = [sys.executable, "import_weights.py", f"--weights={weights}", f"--model={model}", f"--output={output}"]
    return subprocess.run(cmd, cwd=REPO, env=cli_env(1), capture_output=True, text=True, timeout=300)

  result = import_weights(bottleneck, "resnet50", tmp_path / "no")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: the state dict has nothing for stage1_block1")
  assert not (tmp_path / "no").exists()
  cut = tmp_path / "cut.safetensors"  # a download cut short: one line, nothing written
  cut.write_bytes(open(bottleneck, "rb").read()[:os.path.getsize(bottleneck) // 3])
  result = import_weights(cut, "resnet50", tmp_path / "no")
  assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]
  assert result.stderr.strip().startswith(f"error: {cut} is not a readable .safetensors file")
  assert not (tmp_path / "no").exists()
  # A whole ResNet-18: what the CLI writes is what --config.init_from reads.
  weights = str(tmp_path / "resnet18.safetensors")
  save_file({k: v.contiguous() for k, v in torch_resnet("resnet18").state_dict().items()}, weights)
  result = import_weights(weights, "resnet18", tmp_path / "r18")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "imported resnet18 (11,689,512 parameters, 1000 classes)" in result.stdout
  model = create_model("resnet18", 1000)
  expected = resnet_variables(read_state_dict(weights), model)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  read, _ = read_float_variables(str(tmp_path / "r18"), dict(abstract))
  jax.tree.map(np.testing.assert_array_equal, read, expected)
