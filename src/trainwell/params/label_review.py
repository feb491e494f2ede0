"""The label_review section of params.yaml: k-fold models whose out-of-fold predictions cleanlab reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainwell import params_limits as limits
from trainwell.params.base import Seed, _Section


class LabelReviewParams(_Section):
    """k-fold cross-validation for out-of-fold probabilities and embeddings on every split (stage label_review)."""

    # The defaults cost less than one `train` of the same data and pass issue #24's bars on real
    # digits (docs/label-review.md, "Cost and defaults"): 3 folds of 8 epochs at 3e-3 in batches of 32, the last 3
    # epochs' predictions averaged, 0.95 of cleanlab's count flagged.
    folds: int = Field(3, ge=2, le=limits.MAX_FOLDS)
    epochs_per_fold: int = Field(8, ge=1, le=limits.MAX_STEPS, description=(
        "at most (see early_stopping_patience)"))
    early_stopping_patience: int = Field(0, ge=0, le=limits.MAX_STEPS, description=(
        "a fold stops when its held-out loss has not fallen for this many epochs, keeping its best (0: off)"))
    average_epochs: int = Field(3, ge=1, le=limits.MAX_STEPS, description=(
        "held-out probabilities: the mean of the fold model's last this-many epochs (up to its best)"))
    issue_share: float = Field(0.95, gt=0.0, le=1.0, description=(
        "share of cleanlab's label issues flagged, most suspicious first (below 1: precision over recall)"))
    # In pixels; the side is training/fold_models.review_side.
    image_size: int | None = Field(None, ge=8, le=1024, description=(
        "fold models' input side; empty: the images' own size (at least 32) when below data.image_size"))
    # Faster than train.learning_rate: each fold model only has to rank labels, not ship.
    learning_rate: float = Field(3e-3, gt=0.0, le=limits.MAX_LEARNING_RATE, description="Adam step size for the fold models")
    batch_size: int = Field(32, ge=1, le=limits.MAX_BATCH)
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
