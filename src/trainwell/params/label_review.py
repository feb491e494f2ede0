"""The label_review section of params.yaml: k-fold models whose out-of-fold predictions cleanlab reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainwell import params_limits as limits
from trainwell.params.base import Seed, _Section


class LabelReviewParams(_Section):
    """k-fold cross-validation for out-of-fold probabilities and embeddings on every split (stage label_review)."""

    folds: int = Field(5, ge=2, le=limits.MAX_FOLDS)
    epochs_per_fold: int = Field(12, ge=1, le=limits.MAX_STEPS, description=(
        "at most; a fold stops when its held-out loss has not fallen for ..."))
    early_stopping_patience: int = Field(3, ge=0, le=limits.MAX_STEPS, description=(
        "... this many epochs, keeping its best epoch (0: always every epoch)"))
    # In pixels; the side is training/fold_models.review_side.
    image_size: int | None = Field(None, ge=8, le=1024, description=(
        "fold models' input side; empty: the images' own size (at least 32) when below data.image_size"))
    # Faster than train.learning_rate: each fold model only has to rank labels, not ship.
    learning_rate: float = Field(1e-3, gt=0.0, le=limits.MAX_LEARNING_RATE, description="Adam step size for the fold models")
    batch_size: int = Field(64, ge=1, le=limits.MAX_BATCH)
    seed: Seed = 0
    # low_self_confidence flags as many files as confident learning estimates are mislabelled,
    # taking those the models believe least: the more precise choice on planted flips
    # (benchmarks/label_review.py; figures in CHANGELOG).
    filter_by: Literal[
        "low_self_confidence", "low_normalized_margin", "prune_by_noise_rate", "prune_by_class", "both",
        "confident_learning", "predicted_neq_given",
    ] = Field("low_self_confidence", description="cleanlab find_label_issues(filter_by=...)")
    # For low_self_confidence / low_normalized_margin: the confident joint's off-diagonal as it is,
    # or calibrated first (training/label_review.rank_label_issues).
    estimation_method: Literal["off_diagonal", "off_diagonal_calibrated"] = Field(
        "off_diagonal_calibrated", description="how cleanlab counts the issues to flag (num_label_issues)")
    # training/outliers.py
    outlier_fence: float = Field(2.5, ge=0.0, le=limits.MAX_Z, description=(
        "outlier: log mean distance to 10 nearest neighbours > Q3 + fence x IQR of its class's"))
