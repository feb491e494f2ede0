"""The data sections of params.yaml: paths, demo, data, audit, split and build."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from trainwell import params_limits as limits
from trainwell.kinds import AUDIT_KINDS, BLOCKING_KINDS
from trainwell.params.base import Seed, _location, _Section, _unique, above
from trainwell.params_file import file_name as _file_name
from trainwell.params_file import short_repr as _short

AuditKind = Literal[AUDIT_KINDS]  # type: ignore[valid-type]


class PathsParams(_Section):
    """Every generated path, declared once; dvc.yaml interpolates these with ${paths.*}."""

    _file_names = field_validator("*")(_file_name)

    versions: str = Field(".trainwell/versions.json",
                          description="installed trainwell, TensorFlow, Keras, ...: every stage depends on it")
    demo_dir: str = "data/demo"
    quarantine: str = "data/audit/quarantine.csv"
    audit_cache: str = Field("data/audit/cache.json",
                             description="per-file results by content: a re-audit decodes only changes")
    audit_report: str = "reports/audit/audit.json"
    audit_html: str = "reports/audit/index.html"
    audit_metrics: str = "metrics/audit.json"
    splits_dir: str = "data/splits"
    split_metrics: str = "metrics/split.json"
    cache_dir: str = "data/cache"
    model: str = "models/model.keras"
    train_backup_dir: str = Field("data/train_backup",
                                  description="last completed epoch of an interrupted run (not a DVC output)")
    train_log_dir: str = "dvclive"
    train_report_dir: str = "reports/train"
    eval_metrics: str = "metrics/eval.json"
    eval_report_dir: str = "reports/eval"
    label_report_dir: str = "reports/labels"
    label_metrics: str = "metrics/labels.json"
    report_index: str = Field("reports/index.html",
                              description="the report site: headline numbers, gate verdict, a page per stage")
    split_report_dir: str = "reports/split"
    export_dir: str = Field("models/export", description="SavedModel (encoded image bytes in) and TFLite files")
    export_metrics: str = Field("metrics/export.json", description="their agreement with the Keras model on the test split")
    card: str = Field("models/card.md", description="the model card, and its JSON twin")
    card_json: str = "models/card.json"

    _local_or_s3 = field_validator("cache_dir")(_location)


class DemoParams(_Section):
    classes: list[str] = Field(default_factory=lambda: ["circle", "square", "triangle", "cross", "ring"])
    images_per_class: int = Field(600, ge=1, le=limits.MAX_IMAGES_PER_CLASS)
    image_size: int = Field(48, ge=16, le=1024, description="pixels per side")
    seed: Seed = 0
    inject_corrupt: bool = Field(False, description="true writes one truncated JPEG, to watch the audit catch it")

    _unique_classes = field_validator("classes")(_unique)


class DataParams(_Section):
    dir: str = Field("data/demo", description="your own data: a folder with one sub-folder per class")
    classes: list[str] | None = Field(None, description="empty (null): every sub-folder, sorted; or a list (fixes label order)")
    # Keep the manifest inside `dir`, so DVC sees it change.
    manifest: str | None = Field(None, description='empty, or a CSV "path,label" (paths relative to dir) instead of class folders')
    extensions: list[str] = Field(
        default_factory=lambda: [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy"]
    )
    # The demo's own side; `trainwell init --data` writes your images' own (up to 75, the story's input).
    image_size: int = Field(48, ge=8, le=1024, description="images are resized to image_size x image_size once, in `build`")

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


PROPERTIES_COMMENT = """\
Image properties are judged against the dataset and each file's class. Past the first bound a
file is a defect on its own (nearly black, white, flat, edgeless); past the second, looser one
only when it is an outlier (robust z-score beyond outlier_z) of its class AND of the dataset.
A bound most of the dataset is past is reported once, as a note for the dataset."""


class AuditParams(_Section):
    # Quarantined files are listed in the quarantine file and left out of split and build.
    fail_on: list[AuditKind] = Field(default_factory=lambda: list(BLOCKING_KINDS),
                                     description="these kinds make the stage exit 1")
    quarantine: list[AuditKind] = Field(default_factory=lambda: list(BLOCKING_KINDS),
                                        description="these files never reach split/build")
    max_pixels: int = Field(40_000_000, ge=1, le=limits.MAX_PIXELS,
                            description="decompression-bomb guard, read from the header before decoding")
    min_side: int = Field(16, ge=1, le=limits.MAX_SIDE, description="pixels; smaller images are reported as too_small")
    max_aspect_ratio: float = Field(4.0, ge=1.0, le=limits.MAX_RATIO,
                                    description="longer/shorter side above this is odd_aspect_ratio")
    # The properties themselves: audit/properties.py.
    dark_below: float = Field(10.0, ge=0.0, le=255.0, json_schema_extra=above(PROPERTIES_COMMENT),
                              description="dark: the brightest 1% of pixels (luma 0-255) below this")
    dark_outlier_below: float = Field(80.0, ge=0.0, le=255.0)
    light_above: float = Field(250.0, ge=0.0, le=255.0, description="light: the darkest 1% of pixels above this")
    light_outlier_above: float = Field(220.0, ge=0.0, le=255.0)
    min_entropy: float = Field(0.25, ge=0.0, le=8.0, description="low_information: brightness entropy (bits, 0-8) below this")
    min_entropy_outlier: float = Field(4.0, ge=0.0, le=8.0)
    blurry_below: float = Field(1.0, ge=0.0, le=limits.MAX_LAPLACIAN_VARIANCE, description=(
        "blurry: variance of the Laplacian below this (sharp photos: hundreds+, a clear sky: ~2)"))
    blurry_outlier_below: float = Field(20.0, ge=0.0, le=limits.MAX_LAPLACIAN_VARIANCE)
    outlier_z: float = Field(3.5, gt=0.0, le=limits.MAX_Z,
                             description="robust z-score (median, MAD and the lowest 2%) past which a file is an outlier")
    # Near-duplicates (docs/audit.md): pHashes (or a crop hash and a pHash) within this many bits are
    # candidates, as are thumbnails alike unshifted (up to 20,000 files); near-duplicates when 16x16
    # grey thumbnails correlate this well (two writers' "1"s reach 0.9948), or as crops the crop bar
    # (look-alikes reach 0.998); or are distinctive (the bar on the 24x24 ones, and at most the
    # ratio x the nearest rival's distance); AND 8x8 colours, brightness and contrast evened out,
    # differ at most this much (0-255; copies < 2).
    near_duplicate_distance: int = Field(5, ge=0, le=20,
                                         description="pHash bits (of 64) within which two files are compared ...")
    near_duplicate_similarity: float = Field(0.995, ge=0.0, le=1.0, description=(
        "... then near-duplicates when 16x16 thumbnails correlate this well (0-1)"))
    near_duplicate_crop_similarity: float = Field(0.999, ge=0.0, le=1.0, description=(
        "... or, read as crops of each other (up to 3% a side), this well (0-1)"))
    near_duplicate_pixel_difference: float = Field(6.0, ge=0.0, le=255.0,
                                                   description="... and their colours differ by at most this (0-255)")
    near_duplicate_distinctive_similarity: float = Field(0.995, ge=0.9, le=1.0, description=(
        "... or this well, when clearly closer than either file's ..."))
    near_duplicate_distinctive_ratio: float = Field(0.2, gt=0.0, le=1.0, description=(
        "... next-best candidate: distance <= this x the rival's"))
    max_class_imbalance: float = Field(10.0, ge=1.0, le=limits.MAX_RATIO,
                                       description="largest/smallest class above this is class_imbalance")
    workers: int = Field(0, ge=0, le=limits.MAX_WORKERS, description="decode processes; 0 = one per CPU core")
    # A 75x75 JPEG's checks take 0.4 ms.
    file_timeout_s: float = Field(30.0, gt=0.0, le=limits.MAX_TIMEOUT_S,
                                  description="a file whose check takes longer is decode_timeout (and quarantined)")


class SplitParams(_Section):
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    seed: Seed = 0
    # At 0 any class is accepted, and a class missing from a split is a warning.
    min_images_per_class: int = Field(10, ge=0, le=1_000_000_000, description=(
        "fewer usable images, or none in validation or test, stops the stage (0: warn only)"))
    # A group that big is more likely look-alikes than copies, and it must not decide where a slice
    # of the class goes; it is reported.
    max_group_share: float = Field(0.05, gt=0.0, le=1.0, description=(
        "a duplicate group over this share of its class (and 10 files) is split like single files"))

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1 so something is left to train on, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        return self


class BuildParams(_Section):
    # A shard is the unit of streaming and shuffling for large sets.
    shard_size: int = Field(4096, ge=1, le=limits.MAX_SHARD_SIZE, description="images per cache shard")
    workers: int = Field(0, ge=0, le=limits.MAX_WORKERS, description="decode threads; 0 = one per CPU core")
    # data.cache.shuffle_rows
    seed: Seed = Field(0, description="of the row shuffle before sharding, so every shard mixes the classes")
