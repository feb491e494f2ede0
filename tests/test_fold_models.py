"""Label review's fold models' input side: the sources' own size when smaller, never below what the network accepts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from trainwell.params import BACKBONE_MIN_IMAGE_SIZE, LabelReviewParams, TrainParams, _feature_map_size
from trainwell.training.fold_models import SMALLEST_REVIEW_SIDE, resized, review_side, smallest_side


@pytest.mark.parametrize(("filters", "kernel"), list(itertools.product([[8], [16, 16, 32], [4, 4, 4, 4, 4]], [1, 2, 3, 5])))
def test_the_smallest_side_is_the_least_every_cnn_block_accepts(filters, kernel):
    train = TrainParams(conv_filters=filters, kernel_size=kernel)
    side = smallest_side(train)
    assert _feature_map_size(side, kernel, len(filters)) >= 1
    assert _feature_map_size(side - 1, kernel, len(filters)) == 0


def test_a_backbone_smallest_side_is_its_own_minimum():
    for name, side in BACKBONE_MIN_IMAGE_SIZE.items():
        assert smallest_side(TrainParams(model=name)) == side


def test_review_side_over_generated_settings():
    """Many generated (image_size, cached side, source side, network) cases: the side is never above
    the cache's, never below what the network accepts (unless the cache itself is smaller), is the
    chosen image_size when set, and the sources' own side (at least SMALLEST_REVIEW_SIDE) when they are smaller."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        train = TrainParams(conv_filters=[16] * int(rng.integers(1, 5)), kernel_size=int(rng.integers(1, 6)))
        wanted = None if rng.random() < 0.5 else int(rng.integers(8, 300))
        cached = int(rng.integers(8, 300))
        source = None if rng.random() < 0.2 else int(rng.integers(1, 2000))
        review = LabelReviewParams(image_size=wanted)
        side = review_side(review=review, train=train, cached_side=cached, source_side=source)
        floor = min(smallest_side(train), cached)
        assert floor <= side <= cached, (wanted, cached, source, side)
        if wanted is not None:
            assert side == max(min(wanted, cached), floor)
        elif source is None:
            assert side == cached
        else:
            assert side == max(min(max(source, SMALLEST_REVIEW_SIDE), cached), floor)


def test_28_pixel_digits_cached_at_48_are_reviewed_at_32():
    side = review_side(review=LabelReviewParams(), train=TrainParams(), cached_side=48, source_side=28)
    assert side == 32
    assert review_side(review=LabelReviewParams(), train=TrainParams(), cached_side=75, source_side=28) == 32
    assert review_side(review=LabelReviewParams(), train=TrainParams(), cached_side=48, source_side=40) == 40
    assert review_side(review=LabelReviewParams(), train=TrainParams(), cached_side=75, source_side=500) == 75
    assert review_side(review=LabelReviewParams(image_size=32), train=TrainParams(), cached_side=75,
                       source_side=28) == 32


def test_resized_keeps_uint8_and_averages_areas():
    images = np.random.default_rng(1).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    same = resized(tf.constant(images), 8)
    np.testing.assert_array_equal(np.asarray(same), images)
    half = np.asarray(resized(tf.constant(images), 4))
    assert half.dtype == np.uint8 and half.shape == (3, 4, 4, 3)
    blocks = images.reshape(3, 4, 2, 4, 2, 3).astype(np.float64).mean(axis=(2, 4))
    assert np.abs(half.astype(np.float64) - blocks).max() <= 0.5 + 1e-6


def test_snapshots_keep_only_the_epochs_asked_for_and_the_last_few():
    from trainwell.training.fold_models import Snapshots

    scored = iter(range(100))
    snapshots = Snapshots(score=lambda: np.full((2, 3), next(scored), np.float32), epochs=range(2, 9), keep=3)
    for epoch in range(10):
        snapshots.on_epoch_end(epoch)
    # Epochs 0, 1 and 9 are outside the range (never scored); of 2..8, the last 3 are kept.
    assert sorted(snapshots.by_epoch) == [6, 7, 8]
    assert [float(snapshots.by_epoch[epoch][0, 0]) for epoch in (6, 7, 8)] == [4.0, 5.0, 6.0]


@pytest.mark.train
def test_held_out_probabilities_are_the_mean_of_the_last_epochs(built):
    """A fold model's probabilities with average_epochs 2 are exactly the mean of one run stopped
    after its first epoch and one after its second (seeded, deterministic); with early stopping on,
    the review still runs and every row is a distribution."""
    from trainwell.params import load_params
    from trainwell.training.label_review import review_labels

    params = load_params()

    def probabilities(**settings) -> np.ndarray:
        review = params.label_review.model_copy(update={"folds": 2, **settings})
        return review_labels(cache_dir=params.paths.cache_dir, review=review, train=params.train,
                             memory_budget_bytes=1 << 30).probabilities

    first = probabilities(epochs_per_fold=1, average_epochs=1)
    second = probabilities(epochs_per_fold=2, average_epochs=1)
    averaged = probabilities(epochs_per_fold=2, average_epochs=2)
    assert not np.array_equal(first, second)
    np.testing.assert_allclose(averaged, (first + second) / 2, rtol=0, atol=2e-7)
    stopped = probabilities(epochs_per_fold=3, average_epochs=2, early_stopping_patience=1)
    np.testing.assert_allclose(stopped.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("counts", "expected"), [
    ([91, 91, 91], 13),  # 2,907 digits a fold in batches of 32: 91 = 7 x 13
    ([54, 54, 54], 9),   # the demo's 1,700
    ([91, 92, 91], 1),   # folds one batch apart share no divisor: one batch a call, as before
    ([64, 48], 16),      # a validation pass's count counts too
    ([7], 7),
])
def test_fold_calls_take_the_most_batches_that_divide_every_epoch(counts, expected):
    from trainwell.training.fold_models import FOLD_STEPS_PER_EXECUTION, fold_steps_per_execution

    chosen = fold_steps_per_execution(counts, strategy="default")
    assert chosen == expected and chosen <= FOLD_STEPS_PER_EXECUTION
    assert all(count % chosen == 0 for count in counts)
    # Under a distribution strategy one batch a call, whatever divides (see the docstring).
    assert fold_steps_per_execution(counts, strategy="mirrored") == 1
    assert fold_steps_per_execution(counts, strategy="multi_worker") == 1
