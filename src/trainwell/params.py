"""Typed models for params.yaml: every section is validated when a stage loads it."""

from __future__ import annotations

import reprlib
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from trainwell.errors import ParamsError
from trainwell.kinds import AUDIT_KINDS, BLOCKING_KINDS

DEFAULT_PARAMS_FILE = "params.yaml"

AuditKind = Literal[AUDIT_KINDS]  # type: ignore[valid-type]

# Limits on hostile params files: a real one is a few kilobytes and a few hundred values.
MAX_PARAMS_BYTES = 1_000_000
# YAML values after expanding every *alias: a 334-byte file of nested aliases once expanded to
# hundreds of millions of values, a 226 MB error message and ~1 GB of memory.
MAX_YAML_VALUES = 10_000
# An error message echoes at most this many characters of the offending input ...
MAX_ECHO = 200
# ... and lists at most this many problems.
MAX_PROBLEMS = 10


def _short(value: Any) -> str:
    """repr(value) for an error message, at most MAX_ECHO characters however big the value is."""
    # reprlib stops at a few items per level, so a huge or recursive structure is never walked whole.
    brief = reprlib.Repr()
    brief.maxlevel, brief.maxlist, brief.maxdict, brief.maxstring, brief.maxother = 3, 10, 10, 100, 100
    try:
        text = brief.repr(value)
    except (ValueError, RecursionError):  # e.g. an int beyond Python's 4300-digit str() limit
        text = f"<{type(value).__name__}>"
    return _cut(text)


def _cut(text: str, limit: int = MAX_ECHO) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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
    """A class list with no repeats: a repeated class would get two label indices."""
    repeated = sorted(name for name, count in Counter(values or []).items() if count > 1)
    if repeated:
        raise ValueError(f"lists {_short(repeated)} more than once; name each class once")
    return values


class PathsParams(_Section):
    """Every generated path, declared once; dvc.yaml interpolates these with ${paths.*}."""

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


class DemoParams(_Section):
    classes: list[str] = Field(default_factory=lambda: ["circle", "square", "triangle", "cross", "ring"])
    images_per_class: int = Field(1000, ge=1)
    image_size: int = Field(75, ge=16, le=1024)
    seed: int = 0
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
    image_size: int = Field(75, ge=8, le=1024)
    extensions: list[str] = Field(
        default_factory=lambda: [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy"]
    )

    _unique_classes = field_validator("classes")(_unique)

    @field_validator("extensions")
    @classmethod
    def _lowercase_with_dot(cls, value: list[str]) -> list[str]:
        bad = [ext for ext in value if not ext.startswith(".")]
        if bad:
            raise ValueError(f"extensions must start with a dot, got {_short(bad)}")
        return [ext.lower() for ext in value]


class AuditParams(_Section):
    # Kinds that make the stage exit 1 (after writing its reports).
    fail_on: list[AuditKind] = Field(default_factory=lambda: list(BLOCKING_KINDS))
    # Kinds whose files are listed in the quarantine file and excluded from split/build.
    quarantine: list[AuditKind] = Field(default_factory=lambda: list(BLOCKING_KINDS))
    # Decompression-bomb guard, in pixels, checked from the header before decoding.
    max_pixels: int = Field(40_000_000, ge=1)
    # Images whose shorter side is below this many pixels are reported.
    min_side: int = Field(16, ge=1)
    # Longer side / shorter side above this is reported: a square resize would distort it.
    max_aspect_ratio: float = Field(4.0, ge=1.0)
    # Mean brightness (luma, 0-255) below / above these is reported as dark / light.
    dark_below: float = Field(25.0, ge=0.0, le=255.0)
    light_above: float = Field(230.0, ge=0.0, le=255.0)
    # Brightness-histogram entropy in bits (0-8); below this the image carries little information.
    min_entropy: float = Field(1.0, ge=0.0, le=8.0)
    # Variance of the Laplacian of the grey image below this is blurry (sharp photos: hundreds+).
    blurry_below: float = Field(20.0, ge=0.0)
    # Near-duplicates: pHash (64 bits) within this many bits AND 8x8 RGB thumbnails within this
    # mean absolute difference (0-255; re-encoded or resized copies measure about 1).
    near_duplicate_distance: int = Field(5, ge=0, le=20)
    near_duplicate_pixel_difference: float = Field(4.0, ge=0.0, le=255.0)
    # Largest class / smallest class above this is reported.
    max_class_imbalance: float = Field(10.0, ge=1.0)
    workers: int = Field(0, ge=0, description="decode processes; 0 = one per CPU core")
    # A file whose check takes longer is reported as decode_timeout (seconds; a 75x75 JPEG takes ~0.4 ms).
    file_timeout_s: float = Field(30.0, gt=0.0)


class SplitParams(_Section):
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    seed: int = 0

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
    shard_size: int = Field(4096, ge=1)
    workers: int = Field(0, ge=0, description="decode threads; 0 = one per CPU core")


class GuardParams(_Section):
    """The divergence guard (trainwell.training.guard); on by default."""

    enabled: bool = True
    # Steps between weight checks and in-memory snapshots: a rollback loses at most this many.
    check_every: int = Field(10, ge=1)
    # A batch loss this many times the recent median and above chance level (ln N) is a spike:
    # a sigmoid head that collapsed went from 0.33 to 1.54 (4.7x), to ln 5 = 1.61.
    spike_factor: float = Field(4.0, gt=1.0)
    spike_window: int = Field(50, ge=5, description="batches in the running median")
    lr_factor: float = Field(0.5, gt=0.0, lt=1.0, description="learning-rate multiplier after each rollback")
    max_rollbacks: int = Field(5, ge=0)


class AugmentStep(_Section):
    """One augmentation step: a class name (albumentations transform or Keras layer) and its arguments."""

    name: str = Field(description="e.g. HorizontalFlip (albumentations) or RandomFlip (Keras)")
    params: dict[str, Any] = Field(default_factory=dict)


class TrainParams(_Section):
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(32, ge=1)
    # Adam's step size.
    learning_rate: float = Field(1e-4, gt=0.0)
    seed: int = 0
    # One Conv2D + MaxPooling2D block per entry; [] is a valid model with no conv blocks.
    conv_filters: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [16, 16, 32])
    kernel_size: int = Field(2, ge=1)
    dense_units: int = Field(128, ge=1)
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
    augment_processes: int | None = Field(None, ge=0)
    # Or (and) augmentation on the accelerator: Keras random preprocessing layers placed in the
    # model after the uint8 -> [0, 1] rescaling, active only in fit(), e.g.
    # [{name: RandomFlip, params: {mode: horizontal}}, {name: RandomRotation, params: {factor: 0.04}}].
    augment_layers: list[AugmentStep] = Field(default_factory=list)
    # Resume an interrupted run from its last completed epoch (same params and data only).
    resume: bool = True
    # Where the steps run (README "Scaling out"). batch_size is the GLOBAL batch, split evenly
    # over all replicas, so results do not depend on the device count; when you raise it for
    # more devices, scale learning_rate with it yourself (linear scaling is a starting point).
    # default: one device (the first GPU if any); mirrored: every local GPU, or every logical
    # CPU device when there is no GPU; multi_worker: MultiWorkerMirroredStrategy over TF_CONFIG.
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    # Peak memory (MiB) the training input may take. A split is held in memory (fastest) while
    # about 4x its decoded size fits (train first, then val); the rest streams from the cache one
    # shard (build.shard_size images) at a time. 4096 keeps splits up to ~1 GiB decoded in memory.
    memory_budget_mb: int = Field(4096, ge=0)
    # Split the CPU into this many logical devices before TensorFlow starts (0: leave it), so
    # the mirrored code path runs and is tested on a machine without GPUs.
    cpu_devices: int = Field(0, ge=0, le=64)
    # GPU speed switches, off by default and harmless on CPU. The softmax head stays float32.
    # float32, or a Keras mixed policy by name ("off" is avoided: YAML 1.1 reads it as false).
    mixed_precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    jit_compile: bool = False  # XLA
    # Batches per compiled call: fewer host round trips on fast accelerators. The guard then
    # sees one loss per call and rolls back whole calls.
    steps_per_execution: int = Field(1, ge=1)


class EvaluateParams(_Section):
    batch_size: int = Field(256, ge=1)


class LabelReviewParams(_Section):
    """k-fold cross-validation for out-of-fold probabilities and embeddings on every split (stage label_review)."""

    folds: int = Field(5, ge=2)
    epochs_per_fold: int = Field(12, ge=1)
    # Faster than train.learning_rate: each fold model only has to rank labels, not ship.
    learning_rate: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    # cleanlab's find_label_issues(filter_by=...). low_self_confidence flags as many files as
    # confident learning estimates are mislabelled, taking those the models believe least: on the
    # demo set with 5% flipped labels it measured precision 0.92, recall 0.86 (prune_by_noise_rate:
    # 0.76 / 0.92).
    filter_by: Literal[
        "low_self_confidence", "low_normalized_margin", "prune_by_noise_rate", "prune_by_class", "both",
        "confident_learning", "predicted_neq_given",
    ] = "low_self_confidence"
    # Outlier: mean distance to its 10 nearest neighbours > Q3 + fence x IQR (Datalab: 1.7; README).
    outlier_fence: float = Field(3.0, ge=0.0)


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

    @model_validator(mode="after")
    def _kernel_fits_image(self) -> Params:
        # Checked here, not in TrainParams: the image size lives in another section.
        size, kernel, blocks = self.data.image_size, self.train.kernel_size, len(self.train.conv_filters)
        if _feature_map_size(size, kernel, blocks) > 0:
            return self
        fitting = [k for k in range(min(kernel, size), 0, -1) if _feature_map_size(size, k, blocks) > 0]
        advice = (f"the largest kernel that fits is {fitting[0]}" if fitting else
                  "no kernel fits: use fewer train.conv_filters or a larger data.image_size")
        raise ValueError(
            f"train.kernel_size {kernel} is too large for data.image_size {size} with train.conv_filters "
            f"{_short(self.train.conv_filters)} (each block: a 'valid' Conv2D, then MaxPooling2D(2)); {advice}"
        )


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


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model that holds the key at `loc` (list indices and dict keys are stepped over)."""
    model = root
    for part in loc:
        field = model.model_fields.get(str(part))
        nested = _nested_model(field.annotation) if field is not None else None
        if nested is not None:
            model = nested
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation such as GuardParams or list[GateCheck], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((model for arg in get_args(annotation) if (model := _nested_model(arg))), None)


def _describe_error(error: Any, root: type[BaseModel]) -> str:
    """One line for one pydantic error: the key, what is wrong or allowed, a capped echo of the input."""
    key = _cut(".".join(str(part) for part in error["loc"]))
    if error["type"] == "extra_forbidden":
        # Name the keys that are allowed at that level, so a typo is a one-look fix.
        allowed = ", ".join(_model_at(root, error["loc"][:-1]).model_fields)
        return f"unknown key '{key}'; allowed here: {allowed}"
    if error["type"] == "value_error":
        # Our own validators: their message already names the values (capped by _short).
        message = _cut(str(error["ctx"]["error"]), 4 * MAX_ECHO)
    else:
        message = f"{error['msg']} (got {_short(error['input'])})"
    return f"'{key}': {message}" if key else message


def parse_params(raw: dict | None, *, source: str = DEFAULT_PARAMS_FILE) -> Params:
    """Validate a params mapping; raise ParamsError naming each bad key and what is allowed."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems = [_describe_error(error, Params) for error in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            problems.append(f"... and {len(errors) - MAX_PROBLEMS} more problems")
        listing = "\n  ".join(problems)
        raise ParamsError(f"{source} is invalid:\n  {listing}") from None


class _TooManyValues(yaml.YAMLError):
    """The document expands (through aliases) past MAX_YAML_VALUES, or an alias contains itself."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Values in `node` with every alias expanded, counted on the composed graph (never expanded)."""
    # An alias is the same node object reached twice, so memoising by id keeps this linear in the file.
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise _TooManyValues("an alias refers to a structure that contains it (a recursive structure)")
    open_nodes.add(id(node))
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, open_nodes)
        if size > MAX_YAML_VALUES:
            raise _TooManyValues(f"it expands to more than {MAX_YAML_VALUES:,} values (counting each *alias "
                                 f"use); a params file needs far fewer: write the values out or use fewer aliases")
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


class _ParamsLoader(yaml.SafeLoader):
    """SafeLoader that refuses alias bombs and reports bad tagged values as YAML errors with a line."""

    def construct_document(self, node: yaml.Node) -> Any:
        # Count before building Python objects, so no expansion ever happens.
        _expanded_size(node, {}, set())
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # PyYAML's own constructors leak these, e.g. for `!!bool maybe`, `2001-13-45`, or an
            # integer beyond Python's 4300-digit limit; only a ValueError says something useful.
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            detail = f": {_cut(str(exc))}" if type(exc) is ValueError else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_short(node.value)} as {tag}{detail}", node.start_mark
            ) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A PyYAML error on one short line: where, what, and while doing what."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
        if exc.context:
            text += f" ({exc.context})"
    else:
        text = str(exc)
    return _cut(" ".join(text.split()), 2 * MAX_ECHO)


def _read_text(path: Path) -> str | None:
    """The file's text; None when it does not exist. Refuses folders, huge files and non-UTF-8 bytes."""
    try:
        if not path.exists():
            return None
        if not path.is_file():  # a folder, or a FIFO or device that could block or never end
            kind = "a directory" if path.is_dir() else "not a regular file"
            raise ParamsError(f"{path} is {kind}; params must be a UTF-8 YAML file")
        with path.open("rb") as handle:
            data = handle.read(MAX_PARAMS_BYTES + 1)
    except OSError as exc:
        raise ParamsError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_PARAMS_BYTES:
        raise ParamsError(f"{path} is larger than {MAX_PARAMS_BYTES:,} bytes; a params file is a few kB of YAML")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path} is not UTF-8 (byte {exc.start} is {data[exc.start]:#04x}); "
                          f"params files must be UTF-8 YAML") from None


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate params.yaml; a missing file means all defaults."""
    path = Path(path)
    text = _read_text(path)
    if text is None:
        return Params()
    try:
        raw = yaml.load(text, Loader=_ParamsLoader)  # a SafeLoader: builds no Python objects beyond plain data
    except _TooManyValues as exc:
        raise ParamsError(f"{path} is refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ParamsError(f"{path} nests too deeply to read; params need a few levels at most") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping of sections (demo, data, audit, ...), got {type(raw).__name__}")
    return parse_params(raw, source=str(path))
