"""Typed models for params.yaml: every section is validated when a stage loads it.

Each key's type, default, bounds and description live here once, in the section modules;
templates/params.yaml.in and the repository's params.yaml are written from them by
`python -m trainwell.params.template` (`make params`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from trainwell import params_limits as limits
from trainwell.errors import ParamsError
from trainwell.params.base import Seed, _Section
from trainwell.params.data import AuditKind, AuditParams, BuildParams, DataParams, DemoParams, PathsParams, SplitParams
from trainwell.params.delivery import CardParams, ExportParams, GateCheck, GateParams, PredictParams
from trainwell.params.label_review import LabelReviewParams
from trainwell.params.training import (
    BACKBONE_MIN_IMAGE_SIZE,
    NO_WEIGHTS,
    SEED_CNN,
    AugmentStep,
    EvaluateParams,
    GuardParams,
    ModelName,
    TrainParams,
)
from trainwell.params_file import describe_error, read_params_file
from trainwell.params_file import short_repr as _short

__all__ = [
    "BACKBONE_MIN_IMAGE_SIZE",
    "DEFAULT_PARAMS_FILE",
    "MAX_PROBLEMS",
    "NO_WEIGHTS",
    "SEED_CNN",
    "AuditKind",
    "AuditParams",
    "AugmentStep",
    "BuildParams",
    "CardParams",
    "DataParams",
    "DemoParams",
    "EvaluateParams",
    "ExportParams",
    "GateCheck",
    "GateParams",
    "GuardParams",
    "LabelReviewParams",
    "ModelName",
    "Params",
    "PathsParams",
    "PredictParams",
    "Seed",
    "SplitParams",
    "TrainParams",
    "load_params",
    "parse_params",
]

DEFAULT_PARAMS_FILE = "params.yaml"

# An error message lists at most this many problems.
MAX_PROBLEMS = 10


class Params(_Section):
    """The whole file, sections in the order params.yaml shows them; a description is the section's comment."""

    paths: PathsParams = Field(default_factory=PathsParams,
                               description="every generated file, declared once; dvc.yaml reads these")
    demo: DemoParams = Field(default_factory=DemoParams, description="the embedded synthetic dataset (stage demo_data)")
    data: DataParams = Field(default_factory=DataParams)
    audit: AuditParams = Field(default_factory=AuditParams)
    split: SplitParams = Field(default_factory=SplitParams)
    build: BuildParams = Field(default_factory=BuildParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    label_review: LabelReviewParams = Field(default_factory=LabelReviewParams, description=(
        "stage label_review: k-fold out-of-fold predictions -> cleanlab"))
    export: ExportParams = Field(default_factory=ExportParams, description=(
        "stage export: SavedModel + TFLite, each checked against Keras on the test split"))
    card: CardParams = Field(default_factory=CardParams, description="stage card: models/card.md and card.json")
    predict: PredictParams = Field(default_factory=PredictParams, description=(
        "`trainwell predict FILE|FOLDER|s3://...` (not a stage)"))
    gate: GateParams = Field(default_factory=GateParams, description=(
        "`trainwell gate` (run after dvc repro, not a stage): fail CI when a metric misses its bar"))

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
