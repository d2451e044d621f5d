"""Typed schema of `params.yaml`, validated once at each stage's entry point.

Every model is frozen and forbids unknown keys, so a typo in `params.yaml` or in
`dvc exp run -S key=value` fails at once with the key's dotted name instead of being
silently ignored. Sections mirror the DVC stages; `paths`, `seed` and
`mask_ratio_buckets` are shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(Section):
    scenes: str  # the built-in COCO-format dataset (stage `scenes`)
    pairs: str  # synthesized training pairs (stage `synthesize`)
    segmenter: str  # pretrained segmenter checkpoints (stage `pretrain_segmenter`)
    inpainter: str  # pretrained inpainter checkpoints (stage `pretrain_inpainter`)
    joint: str  # jointly fine-tuned segmenter + inpainters (stage `finetune_joint`)
    joint_ablation: str  # the same without MEL (stage `finetune_joint_ablation`)
    reports: str  # DVC metrics and plots
    onnx: str  # the joint model as ONNX graphs + model.json (stage `export`)
    bento: str  # the built Bento exported as a file + bento.json (stage `package`)


class ScenesParams(Section):
    seed: Seed
    num_images: PositiveInt
    size: Annotated[int, Field(ge=32, le=2048)]
    min_things: Annotated[int, Field(ge=0)]
    max_things: Annotated[int, Field(ge=0)]
    person_prob: Fraction
    occlusion_prob: Fraction
    crowd_prob: Fraction
    jpeg_quality: Annotated[int, Field(ge=50, le=100)]
    workers: PositiveInt

    @model_validator(mode="after")
    def _things_range(self) -> ScenesParams:
        if self.min_things > self.max_things:
            raise ValueError(f"min_things ({self.min_things}) > max_things ({self.max_things})")
        return self


class DatasetParams(Section):
    """A COCO-format root: the built-in scenes, or real COCO 2017 on local disk."""

    root: str
    images: str  # image folder, relative to root (COCO 2017: train2017)
    instances: str  # COCO instances file, relative to root
    # Where the per-pixel segmentation of a source image comes from:
    #   instances: thing instances only (unlabeled elsewhere); stuff: a COCO-Stuff json painted under the
    #   instances; panoptic: a COCO panoptic json + PNG folder; label_maps: a folder of PNG label maps.
    segmentation: Literal["instances", "stuff", "panoptic", "label_maps"]
    stuff: str | None
    panoptic: str | None
    panoptic_masks: str | None
    label_maps: str | None

    @model_validator(mode="after")
    def _segmentation_files(self) -> DatasetParams:
        needed = {"stuff": ["stuff"], "panoptic": ["panoptic", "panoptic_masks"], "label_maps": ["label_maps"]}
        for key in needed.get(self.segmentation, []):
            if getattr(self, key) is None:
                raise ValueError(f"segmentation '{self.segmentation}' needs dataset.{key} to be set")
        return self


BlendMode = Literal["none", "gaussian", "poisson", "motion_blur"]


class SplitFractions(Section):
    train: Fraction
    val: Fraction
    test: Fraction

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class SplitCounts(Section):
    train: Annotated[int, Field(ge=0)]
    val: Annotated[int, Field(ge=0)]
    test: Annotated[int, Field(ge=0)]


class SynthesizeParams(Section):
    seed: Seed
    image_size: Annotated[int, Field(ge=32, le=2048)]
    target_categories: Annotated[list[str], Field(min_length=1)]
    splits: SplitFractions
    pairs: SplitCounts
    min_mask_ratio: Fraction  # pasted objects smaller than this share of the frame are re-drawn
    min_object_area: PositiveInt  # source annotations below this many pixels are skipped
    max_upscale: Annotated[float, Field(ge=1.0)]  # largest enlargement of a source object
    max_outside: Annotated[float, Field(ge=0.0, lt=1.0)]  # share of an object allowed off-frame
    min_visible_share: Fraction  # of M_G that must differ visibly from the background, else re-drawn
    blending: dict[BlendMode, Annotated[float, Field(ge=0.0)]]
    feather_sigma: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]
    motion_blur_length: tuple[Annotated[int, Field(ge=2)], Annotated[int, Field(ge=2)]]
    hflip_prob: Fraction
    label_alpha: Annotated[float, Field(gt=0.0, le=1.0)]  # pasted pixels labelled the object where alpha >= this
    max_bad_fraction: Fraction  # fail when more target annotations / images than this are bad
    workers: PositiveInt

    @field_validator("blending")
    @classmethod
    def _some_weight(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or sum(value.values()) <= 0:
            raise ValueError("at least one blending mode needs a positive weight")
        return value

    @field_validator("feather_sigma", "motion_blur_length")
    @classmethod
    def _ordered(cls, value: tuple) -> tuple:
        if value[0] > value[1]:
            raise ValueError(f"range must be [low, high], got {list(value)}")
        return value


class SegmenterNet(Section):
    width: PositiveInt  # channels of the first U-Net level (doubles per level)
    depth: PositiveInt  # number of downsamplings; image sizes must be multiples of 2**depth
    offsets: bool  # the offset head: per pixel, (dy, dx) to its object's center; splits touching things
    # the segmenter's own working resolution: it is pretrained at this size, and inside the joint model it sees
    # the image shrunk to it (area) and its outputs are scaled back up (bilinear) to networks.image_size
    image_size: Annotated[int, Field(ge=8, le=2048)]

    @model_validator(mode="after")
    def _fits_depth(self) -> SegmenterNet:
        if self.image_size % 2**self.depth:
            raise ValueError(f"image_size {self.image_size} must be a multiple of 2**depth = {2**self.depth}")
        return self


class InpainterNet(Section):
    width: PositiveInt  # EdgeConnect: 64
    residual_blocks: PositiveInt  # EdgeConnect: 8
    dilation: PositiveInt  # EdgeConnect: 2
    discriminator_width: PositiveInt  # EdgeConnect: 64
    hole_fill: Literal["white", "smooth"]  # generators' view of the hole; EdgeConnect: white (README)
    image_head: Literal["tanh01", "residual01"]  # EdgeConnect: tanh01; residual01 corrects the smooth fill

    @model_validator(mode="after")
    def _residual_needs_fill(self) -> InpainterNet:
        if self.image_head == "residual01" and self.hole_fill != "smooth":
            raise ValueError("image_head residual01 corrects the smooth fill: it needs hole_fill: smooth")
        return self


class NetworksParams(Section):
    """Shared by pretraining and joint fine-tuning, so checkpoints fit each other."""

    image_size: Annotated[int, Field(ge=16, le=2048, multiple_of=8)]  # the inpainters' (and the model's) resolution
    segmenter: SegmenterNet
    inpainter: InpainterNet

    @model_validator(mode="after")
    def _segmenter_divides(self) -> NetworksParams:
        if self.image_size % self.segmenter.image_size:
            raise ValueError(f"networks.segmenter.image_size {self.segmenter.image_size} must divide "
                             f"networks.image_size {self.image_size}: the segmenter sees the image shrunk by a whole "
                             "factor")
        return self


# Lightning's precision, or `auto`: bf16-mixed where the device computes bf16 natively (a CPU with AVX512-BF16
# or AMX, a CUDA device with bf16), else 32-true (emulated bf16 is many times slower). One per training section.
Precision = Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "auto"]


class TrainerParams(Section):
    """Lightning Trainer settings shared by the training stages (each stage's precision is in its section)."""

    accelerator: Literal["cpu", "gpu", "cuda", "auto"]
    devices: PositiveInt
    num_nodes: PositiveInt
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"]
    num_workers: Annotated[int, Field(ge=0)]
    # networks trained in the channels-last memory format (CPU: the segmenter's convolutions run ~1.2x
    # faster so; the inpainters' do not, benchmarks/results/stage_throughput.json)
    channels_last: list[Literal["segmenter", "inpainter"]] = []
    limit_train_batches: Annotated[float, Field(gt=0)]  # <= 1.0: share of an epoch; > 1: that many batches
    log_every_n_steps: PositiveInt


class PretrainSegmenterParams(Section):
    seed: Seed
    epochs: PositiveInt
    precision: Precision  # the stage's Lightning precision (`auto`: bf16-mixed where bf16 is native)
    batch_size: PositiveInt
    lr: Annotated[float, Field(gt=0)]
    weight_decay: Annotated[float, Field(ge=0)]
    schedule: Literal["constant", "cosine"]  # AdamW's learning rate: constant, or a cosine decay to 0
    background_share: Fraction  # training items shown as the bare background I_G (scenes with nothing pasted)
    offset_weight: Annotated[float, Field(ge=0)]  # the offset head's L1 in L_PS
    dice_weight: Annotated[float, Field(ge=0)]  # the target classes' soft Dice in L_PS (losses.target_dice_loss)


class InpainterLossWeights(Section):
    edge_adv: Annotated[float, Field(ge=0)]  # lambda_EG
    edge_fm: Annotated[float, Field(ge=0)]  # lambda_EF
    seg_adv: Annotated[float, Field(ge=0)]  # lambda_SG
    seg_ce: Annotated[float, Field(ge=0)]  # lambda_SC
    image_adv: Annotated[float, Field(ge=0)]  # lambda_IG
    image_perceptual: Annotated[float, Field(ge=0)]  # lambda_IF
    image_style: Annotated[float, Field(ge=0)]  # lambda_IS
    image_l1: Annotated[float, Field(ge=0)]  # lambda_IR
    known_weight: Annotated[float, Field(ge=0)]  # L1/CE weight outside the hole (hole = 1)
    normalize_by: Literal["batch", "image"]  # L1/CE divided by the batch's masked pixels, or per image


class PretrainInpainterParams(Section):
    seed: Seed
    epochs: PositiveInt
    precision: Precision  # the stage's Lightning precision (`auto`: bf16-mixed where bf16 is native)
    random_mask_epochs: Annotated[int, Field(ge=0)]  # first epochs on free-form masks (paper Tables II/III)
    object_pairs: PositiveInt | None  # the object-mask epochs use the first N training pairs (paper Table III)
    batch_size: PositiveInt
    lr: Annotated[float, Field(gt=0)]
    d_lr_ratio: Annotated[float, Field(gt=0)]  # discriminator lr = d_lr_ratio x generator lr
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]]
    losses: InpainterLossWeights
    features: Literal["discriminator", "vgg19"]  # activations for the perceptual and style losses
    vgg19_weights: str | None  # local torchvision VGG-19 state dict, when features: vgg19
    image_inputs: Literal["predicted", "ground_truth"]  # maps the image inpainter is trained on
    canny_sigma: Annotated[float, Field(ge=0)]
    schedule: Literal["constant", "cosine"]  # learning rates: constant, or a cosine decay to 0 over the fit

    @model_validator(mode="after")
    def _vgg_file(self) -> PretrainInpainterParams:
        if self.features == "vgg19" and not self.vgg19_weights:
            raise ValueError("features 'vgg19' needs vgg19_weights: a local VGG-19 weights file")
        if self.random_mask_epochs > self.epochs:
            raise ValueError(f"random_mask_epochs ({self.random_mask_epochs}) > epochs ({self.epochs})")
        return self


class MelParams(Section):
    """The mask expansion loss L_X = sum (phi - alpha) * m_hat (DESIGN.md section 2)."""

    enabled: bool  # the ablation switch: false trains without L_X
    alpha: Annotated[float, Field(ge=0, le=1)]  # band width in phi's normalized units (paper: 0.03)
    weight: Annotated[float, Field(ge=0)]  # lambda_X (paper: 1000)
    normalization: Literal["max_abs", "diagonal"]  # phi / max |phi| of the image, or / the image diagonal
    reduction: Literal["mean", "sum"]  # over pixels, per image (Kervadec's code: mean)


class FinetuneJointParams(Section):
    seed: Seed
    epochs: PositiveInt
    precision: Precision  # the stage's Lightning precision (`auto`: bf16-mixed where bf16 is native)
    batch_size: PositiveInt
    lr: Annotated[float, Field(gt=0)]  # the three generators (paper: 1e-5)
    segmenter_lr: Annotated[float, Field(gt=0)]  # the segmenter (paper: 1e-5)
    d_lr_ratio: Annotated[float, Field(gt=0)]
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]]
    schedule: Literal["constant", "cosine"]
    segmentation_weight: Annotated[float, Field(ge=0)]  # weight of L_PS in L_SN (paper: 1)
    selection_margin: Annotated[int, Field(ge=0)]  # px around the selection and M_G that m_hat covers
    background_share: Fraction  # training items shown as the bare I_G: only L_PS learns from them
    offset_weight: Annotated[float, Field(ge=0)]  # the offset head's L1 in L_PS
    dice_weight: Annotated[float, Field(ge=0)]  # the target classes' soft Dice in L_PS
    map_gradient: bool  # the inpainting losses reach the segmenter through its segmentation map too (not only the mask)
    mask_gradient: Literal["composite", "inputs"]  # how the inpainting losses reach the mask (README)
    composite_weight: Annotated[float, Field(ge=0)]  # the composite's whole-image L1 in L_I: the mask's own signal
    spare_others: bool  # MEL and L_C leave the other (not pasted) people of I alone (components/selection.py)
    losses: InpainterLossWeights
    mel: MelParams


class EvaluateParams(Section):
    split: Literal["val", "test"]  # the held-out pairs to score (test: never seen in training or selection)
    batch_size: PositiveInt
    dilation_px: Annotated[int, Field(ge=0)]  # the fixed-dilation baseline: the pretrained mask grown by k px
    samples_per_case: PositiveInt  # pairs per row group (best, median, worst) of reports/samples.png
    visible_threshold: Annotated[int, Field(ge=0, le=254)]  # grey levels: |I - I_G| above it is visible object
    clean_share: Fraction  # a removal is clean when at most this share of the visible object is outside the mask
    lpips_vgg16_weights: str | None  # local torchvision VGG-16 state dict (LPIPS backbone)
    lpips_heads: str | None  # local LPIPS linear heads (the lpips package's weights/v0.1/vgg.pth)
    fid_inception: str | None  # local Inception TorchScript (inception-2015-12-05.pt)

    @model_validator(mode="after")
    def _lpips_pair(self) -> EvaluateParams:
        if bool(self.lpips_vgg16_weights) != bool(self.lpips_heads):
            raise ValueError("LPIPS needs both lpips_vgg16_weights and lpips_heads (or neither)")
        return self


class EvaluateInpainterParams(Section):
    """The pretrained inpainters on the true mask, eroded and dilated (the paper's Table I)."""

    split: Literal["val", "test"]
    batch_size: PositiveInt
    offsets_paper_px: Annotated[list[float], Field(min_length=1)]  # - erodes, + dilates, in the paper's pixels
    paper_image_size: PositiveInt  # the paper's image size (256): offsets scale by networks.image_size / this


class PaperParams(Section):
    """`make paper` (pipelines/paper.py): which DVC experiments reproduce the paper's Tables II-V."""

    seeds: Annotated[list[Seed], Field(min_length=1)]  # finetune_joint.seed of Tables IV and V (mean, sd)
    alphas: Annotated[list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=1)]  # Table IV: MEL's alpha
    random_mask_epochs: PositiveInt  # Table II: the inpainter trained on random masks only, for this many epochs
    finetune_epochs: PositiveInt  # Table III: then this many epochs on object masks
    finetune_pairs: Annotated[list[PositiveInt], Field(min_length=1)]  # Table III: the object-mask set sizes

    @field_validator("seeds", "alphas", "finetune_pairs")
    @classmethod
    def _distinct(cls, value: list) -> list:
        if len(set(value)) != len(value):
            raise ValueError(f"values must be distinct, got {value}")
        return value


class ExportParams(Section):
    opset: Annotated[int, Field(ge=18)]  # ONNX opset of the exported graphs (torch's dynamo exporter)
    parity_pairs: PositiveInt  # test pairs on which ONNX Runtime is compared with PyTorch
    tolerance: Annotated[float, Field(gt=0)]  # largest |ORT - PyTorch| allowed on probabilities and on the fill


class PackageParams(Section):
    bentofile: str  # the Bento's build file (service, files, image with the locked dependencies)


class RegistryParams(Section):
    model_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]  # registered model in MLflow
    metric: Annotated[str, Field(min_length=1)]  # dotted key into the evaluation's metrics JSON
    greater_is_better: bool
    margin: Annotated[float, Field(ge=0)]  # the challenger must beat the champion by more than this


class Params(Section):
    seed: Seed  # the pipeline's base seed; each stage mixes in its own `seed`
    mask_ratio_buckets: Annotated[list[Fraction], Field(min_length=2)]
    paths: Paths
    scenes: ScenesParams
    dataset: DatasetParams
    synthesize: SynthesizeParams
    networks: NetworksParams
    trainer: TrainerParams
    pretrain_segmenter: PretrainSegmenterParams
    pretrain_inpainter: PretrainInpainterParams
    finetune_joint: FinetuneJointParams
    evaluate: EvaluateParams
    evaluate_inpainter: EvaluateInpainterParams
    export: ExportParams
    package: PackageParams
    registry: RegistryParams
    paper: PaperParams

    @field_validator("mask_ratio_buckets")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError(f"bucket edges must increase strictly, got {value}")
        return value


class ParamsError(ValueError):
    """`params.yaml` is missing, unreadable or does not match the schema."""


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate `path`; errors name the file and every offending key."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from err
    return parse_params(raw or {}, source=str(path))


def parse_params(raw: dict, source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = []
        for item in err.errors():
            key = ".".join(str(part) for part in item["loc"]) or "(top level)"
            problems.append(f"  {key}: {item['msg']}")
        raise ParamsError(f"{source} has {len(problems)} bad value(s):\n" + "\n".join(problems)) from None
