"""Image preprocessing in TensorFlow for the tfds pipeline: the paper's RandomResizedCrop and centre crop,
pad-and-crop for small images, normalisation, and the choice between them (`resolve_augmentation`)."""
import tensorflow as tf

from s3jax.errors import DataError

# TensorFlow only feeds the host pipeline: it must never take accelerator memory from JAX.
tf.config.set_visible_devices([], "GPU")

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)


def _image_shape(image_bytes):
  return tf.cond(tf.io.is_jpeg(image_bytes),
                 lambda: tf.image.extract_jpeg_shape(image_bytes),
                 lambda: tf.shape(tf.io.decode_image(image_bytes, 3, expand_animations=False)))


def _decode_and_crop(image_bytes, window):
  """Decodes only the crop window of a JPEG; other formats are decoded whole, then cropped."""
  def generic():
    image = tf.io.decode_image(image_bytes, 3, expand_animations=False)
    return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
  return tf.cond(tf.io.is_jpeg(image_bytes),
                 lambda: tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3), generic)


def random_resized_crop(image_bytes, seed, size: int, min_scale: float = 0.08):
  """RandomResizedCrop(size, scale=(min_scale, 1), ratio=(3/4, 4/3)) from a sampled bounding box."""
  shape = _image_shape(image_bytes)
  begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=(min_scale, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
  image = _decode_and_crop(image_bytes, window)
  return tf.image.resize(image, [size, size], method="bilinear", antialias=False)


def resize_and_center_crop(image_bytes, size: int):
  """Resize the shorter side to size*256/224 (aspect kept), then a centre crop of size x size."""
  image = tf.io.decode_image(image_bytes, 3, expand_animations=False)
  resize_to = int(round(size * 256 / 224))
  h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
  scale = resize_to / tf.minimum(h, w)
  new_h = tf.cast(tf.round(h * scale), tf.int32)
  new_w = tf.cast(tf.round(w * scale), tf.int32)
  image = tf.image.resize(image, [new_h, new_w], method="bilinear", antialias=True)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return tf.image.crop_to_bounding_box(image, top, left, size, size)


def resize_to(image_bytes, size: int):
  """The whole image resized to size x size (small images, such as 32 px ones, keep all their content)."""
  image = tf.io.decode_image(image_bytes, 3, expand_animations=False)
  return tf.image.resize(image, [size, size], method="bilinear", antialias=True)


def pad_crop(image, seed, padding: int):
  """Zero-pad by `padding` and crop back to the image's size at a random offset (as for CIFAR)."""
  shape = tf.shape(image)
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  return tf.image.stateless_random_crop(padded, shape, seed=seed)


def normalize(image, mean, std):
  return (tf.cast(image, tf.float32) - tf.constant(mean)) / tf.constant(std)


AUGMENTATIONS = ("auto", "inception_crop", "pad_crop", "none")
SMALL_IMAGE = 64  # 'auto' uses pad_crop up to this size: a resized crop of a 32 px image can be 9 px


def resolve_augmentation(data_config, image_size: int, is_cifar: bool) -> tuple[str, int]:
  """(augmentation, padding) for a tfds dataset. 'auto': pad_crop for CIFAR and images of at most 64 px
  (padding data.crop_padding, or image_size // 8), inception_crop (RandomResizedCrop) above."""
  augment, padding = data_config.augment, data_config.crop_padding
  if augment not in AUGMENTATIONS:
    raise DataError(f"data.augment={augment!r} is unknown; use one of {AUGMENTATIONS}.")
  if augment == "auto":
    augment = "pad_crop" if is_cifar or image_size <= SMALL_IMAGE else "inception_crop"
  if augment != "inception_crop" and data_config.crop_scale_min != 0.08:
    raise DataError(f"data.crop_scale_min has no effect with data.augment={augment!r}; it sets "
                    "inception_crop's smallest area.")
  if augment == "pad_crop":
    return augment, padding or (4 if is_cifar else max(image_size // 8, 1))
  if padding:
    raise DataError(f"data.crop_padding={padding} has no effect with data.augment={augment!r}; set "
                    "--config.data.augment=pad_crop, or leave crop_padding at 0.")
  if is_cifar and augment == "inception_crop":
    raise DataError("cifar images are 32 px: use data.augment=pad_crop (the default) or none.")
  return augment, 0
