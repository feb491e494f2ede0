"""The sections after training in params.yaml: export, card, predict and gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_serializer

from trainwell import params_limits as limits
from trainwell.params.base import _Section, above


class ExportParams(_Section):
    """Stage export: a SavedModel taking encoded images and TFLite files, each checked against Keras on the test split."""

    int8: Literal["dynamic_range", "full_integer"] = Field("dynamic_range", description=(
        "int8 weights, activations quantised at run time; or full_integer (calibrated)"))
    representative_images: int = Field(256, ge=1, le=limits.MAX_REPRESENTATIVE_IMAGES, description=(
        "training-cache images that calibrate full_integer activations"))
    min_agreement_float16: float = Field(0.999, ge=0.0, le=1.0, description=(
        "top-1 agreement with Keras on the decided test images; a miss\n"
        "warns and counts in metrics/export.json:bars_missed (gated)"))
    min_agreement_int8: float = Field(0.995, ge=0.0, le=1.0)
    # Resizing in TensorFlow rounds differently from Pillow's; files already at data.image_size
    # decode identically.
    min_agreement_encoded: float = Field(0.99, ge=0.0, le=1.0, description=(
        "the SavedModel decoding the test split's original files itself"))
    tie_margin: float = Field(0.05, ge=0.0, le=1.0, description=(
        "decided: Keras' top probability leads the second by this much;\n"
        "closer ones are near-ties that rounding flips either way"))
    # And one past audit.max_pixels, before decoding. TensorFlow's decoders take no more than
    # 2**31 - 1 bytes.
    max_image_bytes: int = Field(32 << 20, ge=1, le=2**31 - 1, description=(
        "the served model refuses a request with a larger image (32 MiB)"))


class CardParams(_Section):
    """Stage card: the words of the model card that only a person can write."""

    intended_use: str = ("Classifying images like those in data.dir into the classes listed here. Not evaluated on "
                         "images from other sources, cameras or populations; measure before relying on it there.")


class PredictParams(_Section):
    """`trainwell predict` (not a stage): batch size and how many classes each row lists."""

    batch_size: int = Field(64, ge=1, le=limits.MAX_BATCH)
    top_k: int = Field(3, ge=1, le=limits.MAX_TOP_K, description="classes listed per image, most probable first")


class GateCheck(_Section):
    """One metric rule for `trainwell gate`."""

    metric: str = Field(description="FILE:KEY, e.g. metrics/eval.json:accuracy (dots reach nested keys)")
    min: float | None = None
    max: float | None = None
    # Against the baseline revision: how far the metric may fall (or rise, for losses).
    max_drop: float | None = Field(None, ge=0.0)
    max_rise: float | None = Field(None, ge=0.0)

    @field_serializer("min", "max", "max_drop", "max_rise")
    def _whole_as_int(self, value: float | None) -> float | int | None:
        # A count's bar is written `max: 0` in params.yaml (params/template.py), as a person writes it.
        return int(value) if value is not None and value.is_integer() else value


GATE_CHECKS_COMMENT = """\
accuracy and macro F1 on the test split; audit errors (files with an error-kind finding,
whatever audit.fail_on says) and files quarantined; exports below export.min_agreement_*"""


class GateParams(_Section):
    baseline: str | None = Field(None, description=(
        "a git revision such as main to compare against; empty = thresholds only"))
    checks: list[GateCheck] = Field(
        default_factory=lambda: [
            GateCheck(metric="metrics/eval.json:accuracy", min=0.95, max_drop=0.01),
            GateCheck(metric="metrics/eval.json:macro_f1", min=0.9, max_drop=0.02),
            GateCheck(metric="metrics/audit.json:errors", max=0),
            GateCheck(metric="metrics/audit.json:quarantined", max=0),
            GateCheck(metric="metrics/export.json:bars_missed", max=0),
        ],
        json_schema_extra=above(GATE_CHECKS_COMMENT),
    )
