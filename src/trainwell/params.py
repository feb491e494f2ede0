"""Typed models for params.yaml: every section is validated when a stage loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from trainwell import params_limits as limits
from trainwell.errors import ParamsError
from trainwell.kinds import AUDIT_KINDS, BLOCKING_KINDS
from trainwell.names import class_list_problem
from trainwell.params_file import describe_error, read_params_file
from trainwell.params_file import file_name as _file_name
from trainwell.params_file import short_repr as _short
from trainwell.storage import url_problem

DEFAULT_PARAMS_FILE = "params.yaml"

AuditKind = Literal[AUDIT_KINDS]  # type: ignore[valid-type]

# An error message lists at most this many problems.
MAX_PROBLEMS = 10
# Every seed: numpy's generators refuse a negative one and np.random.seed (which Keras' seeding
# calls) one of 2**32 or more, each with a traceback mid-stage; here it is an error naming the key.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


def _takes_numbers(annotation: Any) -> bool:
    """True for int/float fields (also optional or in a list) that have no use for a boolean."""
    leaves: set[Any] = set()
    pending = [annotation]
    while pending:
        item = pending.pop()
        args = get_args(item)
        if args:
            pending.extend(args)
        else:
            leaves.add(item)
    return bool(leaves & {int, float}) and not leaves & {bool, Any}


class _Section(BaseModel):
    # extra="forbid" turns a typo such as `learning_rat` into an error naming the key;
    # allow_inf_nan=False rejects .inf / .nan in every float field, present and future.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads `epochs: true` as 1 epoch. Strict mode would also refuse it,
        # but it refuses "1e-4" too, which is how YAML 1.1 (PyYAML) reads `learning_rate: 1e-4`.
        items = value if isinstance(value, list) else [value]
        field = cls.model_fields[info.field_name or ""]
        if any(isinstance(item, bool) for item in items) and _takes_numbers(field.annotation):
            raise ValueError(f"must be a number, not {_short(value)} (YAML reads true/false/yes/no/on/off as booleans)")
        return value


def _unique(values: list[str] | None) -> list[str] | None:
    """A class list of folder names (names.class_list_problem): each one visible path component,
    named once, in one spelling (a repeated class would get two label indices)."""
    problem = class_list_problem(values or [])
    if problem:
        raise ValueError(problem)
    return values


def _location(value: str) -> str:
    """A local path or an s3:// URL: a file:// (or any other) URL is refused, never read as remote."""
    problem = url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class PathsParams(_Section):
    """Every generated path, declared once; dvc.yaml interpolates these with ${paths.*}."""

    _file_names = field_validator("*")(_file_name)

    # Installed versions of trainwell and the libraries behind its numbers; every stage depends on it.
    versions: str = ".trainwell/versions.json"
    demo_dir: str = "data/demo"
    quarantine: str = "data/audit/quarantine.csv"
    audit_cache: str = "data/audit/cache.json"
    audit_report: str = "reports/audit/audit.json"
    audit_html: str = "reports/audit/index.html"
    audit_metrics: str = "metrics/audit.json"
    splits_dir: str = "data/splits"
    split_metrics: str = "metrics/split.json"
    cache_dir: str = "data/cache"
    model: str = "models/model.keras"
    train_backup_dir: str = "data/train_backup"
    train_log_dir: str = "dvclive"
    train_report_dir: str = "reports/train"
    eval_metrics: str = "metrics/eval.json"
    eval_report_dir: str = "reports/eval"
    label_report_dir: str = "reports/labels"
    label_metrics: str = "metrics/labels.json"
    report_index: str = "reports/index.html"  # the report site's front page
    split_report_dir: str = "reports/split"
    export_dir: str = "models/export"
    export_metrics: str = "metrics/export.json"
    card: str = "models/card.md"
    card_json: str = "models/card.json"

    _local_or_s3 = field_validator("cache_dir")(_location)


class DemoParams(_Section):
    classes: list[str] = Field(default_factory=lambda: ["circle", "square", "triangle", "cross", "ring"])
    images_per_class: int = Field(600, ge=1, le=limits.MAX_IMAGES_PER_CLASS)
    image_size: int = Field(48, ge=16, le=1024)
    seed: Seed = 0
    # Write one deliberately corrupt file into the set, to demonstrate the audit.
    inject_corrupt: bool = False

    _unique_classes = field_validator("classes")(_unique)


class DataParams(_Section):
    dir: str = "data/demo"
    # None: the class list is the sorted set of sub-folders of `dir` (or of manifest labels).
    classes: list[str] | None = None
    # Optional CSV with columns path,label (paths relative to `dir`) instead of class folders.
    # Keep it inside `dir` so DVC sees it change.
    manifest: str | None = None
    # The demo's own side; `trainwell init --data` writes your images' own (up to 75, the story's input).
    image_size: int = Field(48, ge=8, le=1024)
    extensions: list[str] = Field(
        default_factory=lambda: [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy"]
    )

    _unique_classes = field_validator("classes")(_unique)
    _file_names = field_validator("dir", "manifest")(_file_name)
    _local_or_s3 = field_validator("dir")(_location)

    @field_validator("extensions")
    @classmethod
    def _lowercase_with_dot(cls, value: list[str]) -> list[str]:
        bad = [ext for ext in value if not ext.startswith(".")]
        if bad:
            raise ValueError(f"extensions must start with a dot, got {_short(bad)}")
        return [ext.lower() for ext in value]


class AuditParams(_Section):
    # fail_on: kinds that make the stage exit 1 (after writing its reports); quarantine: kinds whose
    # files are listed in the quarantine file and left out of split and build.
    fail_on: list[AuditKind] = Field(default_factory=lambda: list(BLOCKING_KINDS))
    quarantine: list[AuditKind] = Field(default_factory=lambda: list(BLOCKING_KINDS))
    max_pixels: int = Field(40_000_000, ge=1, le=limits.MAX_PIXELS, description="decompression-bomb guard, read from the header")
    min_side: int = Field(16, ge=1, le=limits.MAX_SIDE, description="pixels; a shorter side below this is too_small")
    max_aspect_ratio: float = Field(4.0, ge=1.0, le=limits.MAX_RATIO, description="longer / shorter side above this is odd_aspect_ratio")
    # Image properties, judged against the whole dataset and each file's class (audit/properties.py):
    # past the first bound a file is a defect on its own (nearly black, white, flat or edgeless);
    # past the second only when it is an outlier (robust z-score past outlier_z) of its class and of
    # the dataset. A bound the dataset's median is past is one note for the dataset. Luma 0-255: dark
    # when the brightest 1% of pixels are below, light when the darkest 1% are above; entropy in
    # bits; Laplacian variance.
    dark_below: float = Field(10.0, ge=0.0, le=255.0)
    dark_outlier_below: float = Field(80.0, ge=0.0, le=255.0)
    light_above: float = Field(250.0, ge=0.0, le=255.0)
    light_outlier_above: float = Field(220.0, ge=0.0, le=255.0)
    min_entropy: float = Field(0.25, ge=0.0, le=8.0)
    min_entropy_outlier: float = Field(4.0, ge=0.0, le=8.0)
    blurry_below: float = Field(1.0, ge=0.0, le=limits.MAX_LAPLACIAN_VARIANCE)
    blurry_outlier_below: float = Field(20.0, ge=0.0, le=limits.MAX_LAPLACIAN_VARIANCE)
    outlier_z: float = Field(3.5, gt=0.0, le=limits.MAX_Z)
    # Near-duplicates (audit/near_duplicates.py): pHashes, or one's crop hashes and the other's
    # pHash, within this many bits are candidates; near-duplicates when their 16x16 grey thumbnails
    # correlate this well (copies 0.995-1; two writers' "1"s up to 0.9948), or read as crops of each
    # other the crop bar (MNIST look-alikes reach 0.998), AND their 8x8 colour thumbnails, brightness
    # and contrast evened out, differ by at most this much (0-255; copies: below 2, clipped ones 6).
    near_duplicate_distance: int = Field(5, ge=0, le=20)
    near_duplicate_similarity: float = Field(0.995, ge=0.0, le=1.0)
    near_duplicate_crop_similarity: float = Field(0.999, ge=0.0, le=1.0)
    near_duplicate_pixel_difference: float = Field(6.0, ge=0.0, le=255.0)
    max_class_imbalance: float = Field(10.0, ge=1.0, le=limits.MAX_RATIO, description="largest / smallest class above this is reported")
    workers: int = Field(0, ge=0, le=limits.MAX_WORKERS, description="decode processes; 0 = one per CPU core")
    file_timeout_s: float = Field(30.0, gt=0.0, le=limits.MAX_TIMEOUT_S, description="seconds; a longer check is decode_timeout (75x75 JPEG: 0.4 ms)")


class SplitParams(_Section):
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    seed: Seed = 0
    # A class below this many usable images, or with none in validation or test, stops the stage
    # (0: any class is accepted, and a class missing from a split is a warning).
    min_images_per_class: int = Field(10, ge=0, le=1_000_000_000)
    # A duplicate group larger than this share of its class (and than 10 files) is split like single
    # files and reported: a group that big is more likely look-alikes than copies, and it must not
    # decide where a slice of the class goes.
    max_group_share: float = Field(0.05, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1 so something is left to train on, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        return self


class BuildParams(_Section):
    # Images per cache shard; a shard is the unit of streaming and shuffling for large sets.
    shard_size: int = Field(4096, ge=1, le=limits.MAX_SHARD_SIZE)
    workers: int = Field(0, ge=0, le=limits.MAX_WORKERS, description="decode threads; 0 = one per CPU core")
    # Of the row shuffle before sharding: every shard then holds a mix of classes (data.cache.shuffle_rows).
    seed: Seed = 0


class GuardParams(_Section):
    """The divergence guard (trainwell.training.guard); on by default."""

    enabled: bool = True
    # Steps between weight checks and in-memory snapshots: a rollback loses at most this many.
    check_every: int = Field(10, ge=1, le=limits.MAX_STEPS)
    # A batch loss this many times the recent median and above chance level (ln N) is a spike:
    # a sigmoid head that collapsed went from 0.33 to 1.54 (4.7x), to ln 5 = 1.61.
    spike_factor: float = Field(4.0, gt=1.0, le=limits.MAX_FACTOR)
    spike_window: int = Field(50, ge=5, le=limits.MAX_SPIKE_WINDOW, description="batches in the running median")
    lr_factor: float = Field(0.5, gt=0.0, lt=1.0, description="learning-rate multiplier after each rollback")
    max_rollbacks: int = Field(5, ge=0, le=limits.MAX_ROLLBACKS)


class AugmentStep(_Section):
    """One augmentation step: a class name (albumentations transform or Keras layer) and its arguments."""

    name: str = Field(description="e.g. HorizontalFlip (albumentations) or RandomFlip (Keras)")
    params: dict[str, Any] = Field(default_factory=dict)


# keras.applications backbones train.model may name, with the smallest image side each accepts
# (Keras refuses smaller inputs: the stride-32 stem would leave no feature map).
BACKBONE_MIN_IMAGE_SIZE = {
    "MobileNetV3Small": 32,
    "MobileNetV3Large": 32,
    "EfficientNetV2B0": 32,
    "EfficientNetV2B1": 32,
    "EfficientNetV2B2": 32,
    "EfficientNetV2B3": 32,
}
SEED_CNN = "cnn"
ModelName = Literal[(SEED_CNN, *BACKBONE_MIN_IMAGE_SIZE)]  # type: ignore[valid-type]
NO_WEIGHTS = "none"


class TrainParams(_Section):
    epochs: int = Field(15, ge=1, le=limits.MAX_STEPS)
    batch_size: int = Field(32, ge=1, le=limits.MAX_BATCH)
    # Adam's step size (for a backbone with frozen_epochs > 0: during the frozen epochs); Keras' default.
    learning_rate: float = Field(1e-3, gt=0.0, le=limits.MAX_LEARNING_RATE)
    seed: Seed = 0
    # The network: "cnn" (the small CNN below) or a keras.applications backbone (docs/training.md "Pretrained
    # backbones"), which gets a GlobalAveragePooling + dropout + Dense head.
    model: ModelName = SEED_CNN
    # Backbone weights: "none" (random initialisation) or the path of a local weights file of the
    # backbone alone (include_top=False): a .weights.h5 from backbone.save_weights, or the .h5 that
    # keras.applications publishes. Nothing is ever downloaded at run time.
    weights: str = Field(NO_WEIGHTS, min_length=1)
    # Epochs with the backbone frozen (only the head learns, at learning_rate) before the whole
    # network is fine-tuned at fine_tune_learning_rate with a fresh Adam.
    frozen_epochs: int = Field(0, ge=0, le=limits.MAX_STEPS)
    fine_tune_learning_rate: float = Field(1e-5, gt=0.0, le=limits.MAX_LEARNING_RATE)
    # Dropout rate between the backbone's pooled features and the class scores (backbones only).
    head_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    # The cnn's layers: one Conv2D + MaxPooling2D block per entry; [] is a valid model with no conv blocks.
    conv_filters: list[Annotated[int, Field(ge=1, le=limits.MAX_FILTERS)]] = Field(default_factory=lambda: [16, 16, 32])
    kernel_size: int = Field(2, ge=1, le=limits.MAX_KERNEL)
    dense_units: int = Field(128, ge=1, le=limits.MAX_UNITS)
    output_activation: Literal["softmax", "sigmoid", "linear"] = "softmax"
    loss: Literal["categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy"] = (
        "categorical_crossentropy"
    )
    from_logits: bool = False
    # "balanced" weights each class's loss by n / (classes x count), for imbalanced data.
    class_weight: Literal["none", "balanced"] = "none"
    guard: GuardParams = Field(default_factory=GuardParams)
    # Training-time augmentation with albumentations, in order, on uint8 images on the CPU:
    # e.g. [{name: HorizontalFlip, params: {p: 0.5}}, {name: Affine, params: {rotate: [-15, 15]}}].
    # Each image's randomness comes from (seed, epoch, its index): reproducible at any parallelism.
    augment: list[AugmentStep] = Field(default_factory=list)
    # Processes that share each batch's augmentation with the pipeline thread (null: one per
    # CPU core beyond the first; 0: the pipeline thread alone). Results are the same for any value.
    augment_processes: int | None = Field(None, ge=0, le=limits.MAX_WORKERS)
    # Or (and) augmentation on the accelerator: Keras random preprocessing layers placed in the
    # model after the uint8 -> [0, 1] rescaling, active only in fit(), e.g.
    # [{name: RandomFlip, params: {mode: horizontal}}, {name: RandomRotation, params: {factor: 0.04}}].
    augment_layers: list[AugmentStep] = Field(default_factory=list)
    # Resume an interrupted run from its last completed epoch (same params and data only).
    resume: bool = True
    # Where the steps run (docs/scale.md "Scaling out"). batch_size is the GLOBAL batch, split evenly
    # over all replicas, so results do not depend on the device count; when you raise it for
    # more devices, scale learning_rate with it yourself (linear scaling is a starting point).
    # default: one device (the first GPU if any); mirrored: every local GPU, or every logical
    # CPU device when there is no GPU; multi_worker: MultiWorkerMirroredStrategy over TF_CONFIG.
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    # Peak memory (MiB) the training input may take. A split is held in memory (fastest) while
    # about 4x its decoded size fits (train first, then val); the rest streams from the cache one
    # shard (build.shard_size images) at a time. 4096 keeps splits up to ~1 GiB decoded in memory.
    memory_budget_mb: int = Field(4096, ge=0, le=limits.MAX_MEMORY_BUDGET_MB)
    # Split the CPU into this many logical devices before TensorFlow starts (0: leave it), so
    # the mirrored code path runs and is tested on a machine without GPUs.
    cpu_devices: int = Field(0, ge=0, le=64)
    # GPU speed switches, off by default and harmless on CPU. The softmax head stays float32.
    # float32, or a Keras mixed policy by name ("off" is avoided: YAML 1.1 reads it as false).
    mixed_precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    jit_compile: bool = False  # XLA
    # Batches per compiled call: fewer host round trips on fast accelerators. The guard then
    # sees one loss per call and rolls back whole calls.
    steps_per_execution: int = Field(1, ge=1, le=limits.MAX_STEPS_PER_EXECUTION)

    _file_names = field_validator("weights")(_file_name)

    @model_validator(mode="after")
    def _backbone_settings_fit_the_model(self) -> TrainParams:
        if self.model == SEED_CNN and self.weights != NO_WEIGHTS:
            raise ValueError(f"train.weights applies to keras.applications backbones; the {SEED_CNN} always starts "
                             f"from random weights: set train.weights: {NO_WEIGHTS}, or train.model to one of "
                             f"{', '.join(BACKBONE_MIN_IMAGE_SIZE)}")
        if self.model == SEED_CNN and self.frozen_epochs:
            raise ValueError(f"train.frozen_epochs freezes a backbone, and the {SEED_CNN} has none: set "
                             f"train.frozen_epochs: 0, or train.model to a backbone")
        if self.frozen_epochs > self.epochs:
            raise ValueError(f"train.frozen_epochs ({self.frozen_epochs}) is more than train.epochs ({self.epochs}); "
                             "at most every epoch can be frozen")
        return self


class EvaluateParams(_Section):
    batch_size: int = Field(256, ge=1, le=limits.MAX_BATCH)


class PredictParams(_Section):
    """`trainwell predict` (not a stage): batch size and how many classes each row lists."""

    batch_size: int = Field(64, ge=1, le=limits.MAX_BATCH)
    top_k: int = Field(3, ge=1, le=limits.MAX_TOP_K)


class ExportParams(_Section):
    """Stage export: a SavedModel taking encoded images and TFLite files, each checked against Keras on the test split."""

    int8: Literal["dynamic_range", "full_integer"] = "dynamic_range"  # activations quantised at run time, or calibrated
    representative_images: int = Field(256, ge=1, le=limits.MAX_REPRESENTATIVE_IMAGES)  # training images that calibrate full_integer
    # Top-1 agreement with Keras on decided test images; a miss warns and counts in export.json's bars_missed (gated).
    min_agreement_float16: float = Field(0.999, ge=0.0, le=1.0)
    min_agreement_int8: float = Field(0.995, ge=0.0, le=1.0)
    # The SavedModel's own decoder on the test split's original files (resizing in TensorFlow
    # rounds differently from Pillow's; files already at data.image_size decode identically).
    min_agreement_encoded: float = Field(0.99, ge=0.0, le=1.0)
    tie_margin: float = Field(0.05, ge=0.0, le=1.0)  # decided: top probability this far ahead of the second
    # The SavedModel's bytes signature refuses a request holding a larger image (and one past
    # audit.max_pixels, before decoding). TensorFlow's decoders take no more than 2**31 - 1 bytes.
    max_image_bytes: int = Field(32 << 20, ge=1, le=2**31 - 1)


class CardParams(_Section):
    """Stage card: the words of the model card that only a person can write."""

    intended_use: str = ("Classifying images like those in data.dir into the classes listed here. Not evaluated on "
                         "images from other sources, cameras or populations; measure before relying on it there.")


class LabelReviewParams(_Section):
    """k-fold cross-validation for out-of-fold probabilities and embeddings on every split (stage label_review)."""

    folds: int = Field(5, ge=2, le=limits.MAX_FOLDS)
    # At most; a fold stops when its held-out loss has not fallen for early_stopping_patience epochs (0: never).
    epochs_per_fold: int = Field(12, ge=1, le=limits.MAX_STEPS)
    early_stopping_patience: int = Field(3, ge=0, le=limits.MAX_STEPS)
    # Fold models' input side (px). null: the sources' own, at least 32, when below data.image_size (review_side).
    image_size: int | None = Field(None, ge=8, le=1024)
    # Faster than train.learning_rate: each fold model only has to rank labels, not ship.
    learning_rate: float = Field(1e-3, gt=0.0, le=limits.MAX_LEARNING_RATE)
    batch_size: int = Field(64, ge=1, le=limits.MAX_BATCH)
    seed: Seed = 0
    # cleanlab's find_label_issues(filter_by=...). low_self_confidence flags as many files as
    # confident learning estimates are mislabelled, taking those the models believe least: the more
    # precise choice on planted flips (benchmarks/label_review.py; figures in CHANGELOG).
    filter_by: Literal[
        "low_self_confidence", "low_normalized_margin", "prune_by_noise_rate", "prune_by_class", "both",
        "confident_learning", "predicted_neq_given",
    ] = "low_self_confidence"
    # How cleanlab counts the issues low_self_confidence / low_normalized_margin flag (num_label_issues):
    # the confident joint's off-diagonal as it is, or calibrated first (label_review.rank_label_issues).
    estimation_method: Literal["off_diagonal", "off_diagonal_calibrated"] = "off_diagonal_calibrated"
    # Outlier: log mean distance to 10 nearest neighbours > Q3 + fence x IQR of its class's (outliers.py).
    outlier_fence: float = Field(2.5, ge=0.0, le=limits.MAX_Z)


class GateCheck(_Section):
    """One metric rule for `trainwell gate`."""

    metric: str = Field(description="FILE:KEY, e.g. metrics/eval.json:accuracy (dots reach nested keys)")
    min: float | None = None
    max: float | None = None
    # Against the baseline revision: how far the metric may fall (or rise, for losses).
    max_drop: float | None = Field(None, ge=0.0)
    max_rise: float | None = Field(None, ge=0.0)


class GateParams(_Section):
    # A git revision to compare against (e.g. main); null compares with thresholds only.
    baseline: str | None = None
    checks: list[GateCheck] = Field(
        default_factory=lambda: [
            GateCheck(metric="metrics/eval.json:accuracy", min=0.95, max_drop=0.01),
            GateCheck(metric="metrics/eval.json:macro_f1", min=0.9, max_drop=0.02),
            GateCheck(metric="metrics/audit.json:errors", max=0),
            GateCheck(metric="metrics/audit.json:quarantined", max=0),
            GateCheck(metric="metrics/export.json:bars_missed", max=0),
        ]
    )


class Params(_Section):
    paths: PathsParams = Field(default_factory=PathsParams)
    demo: DemoParams = Field(default_factory=DemoParams)
    data: DataParams = Field(default_factory=DataParams)
    audit: AuditParams = Field(default_factory=AuditParams)
    split: SplitParams = Field(default_factory=SplitParams)
    build: BuildParams = Field(default_factory=BuildParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    gate: GateParams = Field(default_factory=GateParams)
    label_review: LabelReviewParams = Field(default_factory=LabelReviewParams)
    predict: PredictParams = Field(default_factory=PredictParams)
    export: ExportParams = Field(default_factory=ExportParams)
    card: CardParams = Field(default_factory=CardParams)

    @model_validator(mode="after")
    def _network_fits_image(self) -> Params:
        # Checked here, not in TrainParams: the image size lives in another section.
        size, train = self.data.image_size, self.train
        if train.model != SEED_CNN:
            smallest = BACKBONE_MIN_IMAGE_SIZE[train.model]
            if size < smallest:
                raise ValueError(f"train.model {train.model} needs images of at least {smallest}x{smallest} "
                                 f"pixels, but data.image_size is {size}; raise data.image_size to {smallest} or "
                                 f"more, or use train.model: {SEED_CNN}")
            return self
        kernel, blocks = train.kernel_size, len(train.conv_filters)
        if _feature_map_size(size, kernel, blocks) > 0:
            return self
        fitting = [k for k in range(min(kernel, size), 0, -1) if _feature_map_size(size, k, blocks) > 0]
        advice = (f"the largest kernel that fits is {fitting[0]}" if fitting else
                  "no kernel fits: use fewer train.conv_filters or a larger data.image_size")
        raise ValueError(
            f"train.kernel_size {kernel} is too large for data.image_size {size} with train.conv_filters "
            f"{_short(self.train.conv_filters)} (each block: a 'valid' Conv2D, then MaxPooling2D(2)); {advice}"
        )


    @model_validator(mode="after")
    def _fits_the_machine(self) -> Params:
        # After _network_fits_image: the sizes that multiply each other, bounded together.
        problem = limits.params_problem(self, classes=len(self.data.classes or ()))
        for key, count in (("build.shard_size", self.build.shard_size),
                           ("export.representative_images", self.export.representative_images)):
            problem = problem or limits.held_images_problem(count=count, image_size=self.data.image_size, key=key)
        if problem:
            raise ValueError(problem)
        return self


def _feature_map_size(image_size: int, kernel_size: int, blocks: int) -> int:
    """Side of the last conv block's output; 0 when a block gets a map smaller than its kernel."""
    size = image_size
    for _ in range(blocks):
        if size < kernel_size:
            return 0
        size = (size - kernel_size + 1) // 2  # 'valid' Conv2D, then MaxPooling2D(2)
        if size == 0:
            return 0
    return size


def parse_params(raw: dict | None, *, source: str = DEFAULT_PARAMS_FILE) -> Params:
    """Validate a params mapping; raise ParamsError naming each bad key and what is allowed."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems = [describe_error(error, Params) for error in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            problems.append(f"... and {len(errors) - MAX_PROBLEMS} more problems")
        keys = [".".join(str(part) for part in error["loc"]) for error in errors]
        raise ParamsError(f"{source} is invalid:", details=problems, keys=keys) from None


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate params.yaml; a missing file means all defaults."""
    path = Path(path)
    return parse_params(read_params_file(path), source=str(path))
