"""The training sections of params.yaml: train (with its guard and augmentation steps) and evaluate."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from trainwell import params_limits as limits
from trainwell.params.base import Seed, _Section
from trainwell.params_file import file_name as _file_name


class GuardParams(_Section):
    """The divergence guard (trainwell.training.guard); on by default."""

    enabled: bool = True
    # A rollback loses at most this many steps.
    check_every: int = Field(10, ge=1, le=limits.MAX_STEPS, description="steps between weight checks and in-memory snapshots")
    # Chance level is ln N: a sigmoid head that collapsed went from 0.33 to 1.54 (4.7x), to ln 5 = 1.61.
    spike_factor: float = Field(4.0, gt=1.0, le=limits.MAX_FACTOR,
                                description="batch loss > factor x recent median and > ln(classes) is a spike")
    spike_window: int = Field(50, ge=5, le=limits.MAX_SPIKE_WINDOW, description="batches in that median")
    lr_factor: float = Field(0.5, gt=0.0, lt=1.0, description="learning rate multiplier after each rollback")
    max_rollbacks: int = Field(5, ge=0, le=limits.MAX_ROLLBACKS, description="then stop with an error; nothing is saved")


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
    # For a backbone with frozen_epochs > 0: the step size during the frozen epochs.
    learning_rate: float = Field(1e-3, gt=0.0, le=limits.MAX_LEARNING_RATE, description=(
        "Adam step size (Keras' default; the run whose sigmoid head diverged used 1e-4)"))
    seed: Seed = 0
    # A backbone (docs/training.md "Pretrained backbones") gets a GlobalAveragePooling + dropout + Dense head.
    model: ModelName = Field(SEED_CNN, description=(
        "the small CNN below, or a keras.applications backbone: MobileNetV3Small/Large, EfficientNetV2B0-B3"))
    # A weights file of the backbone alone: a .weights.h5 from backbone.save_weights, or the .h5
    # that keras.applications publishes.
    weights: str = Field(NO_WEIGHTS, min_length=1, description=(
        "backbone weights: none (random) or a local include_top=False .weights.h5/.h5 file; never downloaded"))
    # The fine-tuning starts with a fresh Adam.
    frozen_epochs: int = Field(0, ge=0, le=limits.MAX_STEPS, description=(
        "backbone frozen for this many epochs (head only, at learning_rate), then fine-tuned whole"))
    fine_tune_learning_rate: float = Field(1e-5, gt=0.0, le=limits.MAX_LEARNING_RATE,
                                           description="Adam step size after the frozen epochs")
    # Between the backbone's pooled features and the class scores.
    head_dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout before a backbone's Dense head")
    # [] is a valid model with no conv blocks.
    conv_filters: list[Annotated[int, Field(ge=1, le=limits.MAX_FILTERS)]] = Field(
        default_factory=lambda: [16, 16, 32], description="cnn: one Conv2D + MaxPooling2D block per entry")
    kernel_size: int = Field(2, ge=1, le=limits.MAX_KERNEL, description="cnn")
    dense_units: int = Field(128, ge=1, le=limits.MAX_UNITS, description="cnn")
    output_activation: Literal["softmax", "sigmoid", "linear"] = Field("softmax", description=(
        "softmax for single-label classes; the contract check rejects sigmoid here"))
    loss: Literal["categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy"] = (
        "categorical_crossentropy"
    )
    from_logits: bool = False
    # For imbalanced data.
    class_weight: Literal["none", "balanced"] = Field("none", description=(
        "or balanced: weight each class's loss by n / (classes x its count)"))
    # Same params and data only.
    resume: bool = Field(True, description="an interrupted run restarts from its last completed epoch")
    # In order, on uint8 images on the CPU. Each image's randomness comes from (seed, epoch, its
    # index): reproducible at any parallelism.
    augment: list[AugmentStep] = Field(default_factory=list, description=(
        "albumentations transforms, e.g. [{name: HorizontalFlip, params: {p: 0.5}}]"))
    # They share it with the pipeline thread; 0: the pipeline thread alone. Results are the same for any value.
    augment_processes: int | None = Field(None, ge=0, le=limits.MAX_WORKERS, description=(
        "processes sharing each batch's augmentation; empty: one per core beyond the first"))
    # Keras random preprocessing layers placed in the model after the uint8 -> [0, 1] rescaling,
    # active only in fit().
    augment_layers: list[AugmentStep] = Field(default_factory=list, description=(
        "or Keras layers in the model (on the GPU), e.g. [{name: RandomFlip, params: {mode: horizontal}}]"))
    # MiB. A split is held in memory (fastest) while about 4x its decoded size fits (train first,
    # then val); the rest streams from the cache one shard (build.shard_size images) at a time.
    # 4096 keeps splits up to ~1 GiB decoded in memory.
    memory_budget_mb: int = Field(4096, ge=0, le=limits.MAX_MEMORY_BUDGET_MB, description=(
        "input pipeline peak: splits fit in memory at ~4x decoded size, else stream by shard"))
    # batch_size is the GLOBAL batch, split evenly over all replicas, so results do not depend on
    # the device count; when you raise it for more devices, scale learning_rate with it yourself.
    # mirrored without a GPU: every logical CPU device (cpu_devices).
    strategy: Literal["default", "mirrored", "multi_worker"] = Field("default", description=(
        'or mirrored (all local GPUs) / multi_worker (TF_CONFIG); docs/scale.md "Scaling out"'))
    # Before TensorFlow starts, so the mirrored code path runs and is tested on a machine without GPUs.
    cpu_devices: int = Field(0, ge=0, le=64, description=">1 splits the CPU into logical devices, to run mirrored without a GPU")
    # GPU speed switches, off by default and harmless on CPU. A Keras mixed policy by name ("off"
    # is avoided: YAML 1.1 reads it as false).
    mixed_precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field("float32", description=(
        "or mixed_float16 / mixed_bfloat16 on GPUs; the softmax head stays float32"))
    jit_compile: bool = Field(False, description="XLA")
    # Fewer host round trips on fast accelerators. The guard then sees one loss per call and rolls
    # back whole calls.
    steps_per_execution: int = Field(1, ge=1, le=limits.MAX_STEPS_PER_EXECUTION, description="batches per compiled call")
    guard: GuardParams = Field(default_factory=GuardParams, description=(
        "divergence guard: roll back NaN/Inf and loss spikes instead of dying"))

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
