"""Export parity: near-ties are counted but never judged; decided images are judged exactly (generated cases)."""

from __future__ import annotations

import numpy as np
import pytest

from trainwell.training.export import parity


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(40))
def test_decided_agreement_counts_only_images_past_the_margin(seed):
    rng = np.random.default_rng(seed)
    images, classes = int(rng.integers(1, 200)), int(rng.integers(2, 12))
    reference = softmax(rng.normal(scale=float(rng.uniform(0.01, 8)), size=(images, classes)))
    # Quantisation-like noise, sometimes large enough to flip decided images too.
    candidate = np.clip(reference + rng.normal(scale=float(rng.choice([1e-4, 1e-2, 0.2])), size=reference.shape), 0, 1)
    margin = float(rng.choice([0.0, 0.01, 0.05, 0.5, 1.0]))
    measured = parity(reference, candidate, tie_margin=margin)

    ordered = np.sort(reference, axis=1)
    decided = (ordered[:, -1] - ordered[:, -2]) >= margin
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    assert measured["decided_images"] == int(decided.sum())
    assert measured["agreement"] == pytest.approx(same.mean())
    assert measured["decided_agreement"] == pytest.approx(same[decided].mean() if decided.any() else 1.0)
    assert measured["max_probability_difference"] == round(float(np.abs(reference - candidate).max()), 4)
    if margin == 0.0:  # every image judged: the old all-images agreement
        assert measured["decided_agreement"] == measured["agreement"]


def test_a_flipped_near_tie_is_no_miss_and_a_flipped_decision_is():
    reference = np.array([[0.50, 0.49, 0.01], [0.90, 0.05, 0.05]])
    tie_flipped = np.array([[0.49, 0.50, 0.01], [0.90, 0.05, 0.05]])
    decision_flipped = np.array([[0.50, 0.49, 0.01], [0.05, 0.90, 0.05]])
    assert parity(reference, tie_flipped, tie_margin=0.05)["decided_agreement"] == 1.0
    assert parity(reference, tie_flipped, tie_margin=0.05)["agreement"] == 0.5
    assert parity(reference, decision_flipped, tie_margin=0.05)["decided_agreement"] == 0.0


def test_nothing_measured_is_full_agreement_and_one_class_is_always_decided():
    assert parity(np.zeros((0, 3)), np.zeros((0, 3)), tie_margin=0.05)["decided_images"] == 0
    one_class = np.ones((4, 1))
    assert parity(one_class, one_class, tie_margin=0.5) == {
        "agreement": 1.0, "decided_agreement": 1.0, "decided_images": 4, "max_probability_difference": 0.0}
