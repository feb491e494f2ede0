"""The training input pipeline: full coverage every epoch, seeded order, uint8 whole batches."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipeline.dataset import make_dataset


def arrays(count: int = 37, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    # Each image's first pixel encodes its index, so batches can be traced back to examples.
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(count)
    labels = (np.arange(count) % 5).astype(np.int32)
    return images, labels


def epoch_ids(dataset: tf.data.Dataset) -> list[int]:
    return [int(i) for images, _ in dataset for i in images.numpy()[:, 0, 0, 0]]


def test_every_epoch_covers_every_example_once_in_a_new_order():
    images, labels = arrays()
    dataset = make_dataset(images=images, labels=labels, num_classes=5, batch_size=8, shuffle=True, seed=1)
    first, second = epoch_ids(dataset), epoch_ids(dataset)
    assert sorted(first) == sorted(second) == list(range(37))
    assert first != second  # reshuffled each epoch, not frozen by a cache


def test_last_partial_batch_is_kept_and_labels_match_images():
    images, labels = arrays()
    batches = list(make_dataset(images=images, labels=labels, num_classes=5, batch_size=8, shuffle=False, seed=0))
    assert [int(b[0].shape[0]) for b in batches] == [8, 8, 8, 8, 5]
    for batch_images, batch_labels in batches:
        assert batch_images.dtype == tf.uint8
        ids = batch_images.numpy()[:, 0, 0, 0]
        assert np.array_equal(np.argmax(batch_labels.numpy(), axis=1), labels[ids])


def test_same_seed_same_batches_other_seed_differs():
    images, labels = arrays()
    make = lambda seed: make_dataset(images=images, labels=labels, num_classes=5, batch_size=8, shuffle=True, seed=seed)  # noqa: E731
    assert epoch_ids(make(7)) == epoch_ids(make(7))
    assert epoch_ids(make(7)) != epoch_ids(make(8))


def test_sparse_labels_option():
    images, labels = arrays()
    batch = next(iter(make_dataset(images=images, labels=labels, num_classes=5, batch_size=8, shuffle=False, seed=0,
                                   one_hot=False)))
    assert batch[1].dtype == tf.int32 and batch[1].shape == (8,)
