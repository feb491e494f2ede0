"""The training input pipeline: full coverage every epoch, stateless seeded order, uint8 whole batches."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainwell.training.inputs import (
    BatchSpec,
    epoch_batches,
    epoch_order,
    make_eval_dataset,
    make_train_dataset,
    steps_per_epoch,
)

COUNT, BATCH = 37, 8


def arrays(count: int = COUNT, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    # Each image's first pixel encodes its index, so batches can be traced back to examples.
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(count)
    labels = (np.arange(count) % 5).astype(np.int32)
    return images, labels


def train_batches(seed: int, first_epoch: int = 0, epochs: int = 3) -> list[np.ndarray]:
    images, labels = arrays()
    dataset = make_train_dataset(images=images, labels=labels, spec=BatchSpec(
        num_classes=5, batch_size=BATCH, seed=seed, first_epoch=first_epoch, epochs=epochs))
    return [batch[0].numpy()[:, 0, 0, 0] for batch in dataset]


def per_epoch(batches: list[np.ndarray]) -> list[list[int]]:
    steps = steps_per_epoch(count=COUNT, batch_size=BATCH)
    return [[int(i) for batch in batches[e * steps : (e + 1) * steps] for i in batch] for e in range(len(batches) // steps)]


def test_every_epoch_covers_every_example_once_in_a_new_order():
    epochs = per_epoch(train_batches(seed=1))
    assert len(epochs) == 3
    for ids in epochs:
        assert sorted(ids) == list(range(COUNT))
    assert epochs[0] != epochs[1] != epochs[2]  # a new order each epoch, not frozen by a cache


def test_batches_never_straddle_epochs_and_last_partial_batch_is_kept():
    sizes = [len(batch) for batch in train_batches(seed=1, epochs=2)]
    assert sizes == [8, 8, 8, 8, 5] * 2


def test_resumed_stream_matches_the_uninterrupted_one():
    assert per_epoch(train_batches(seed=4, first_epoch=2, epochs=3)) == per_epoch(train_batches(seed=4))[2:]


def test_same_seed_same_batches_other_seed_differs():
    assert [b.tolist() for b in train_batches(7)] == [b.tolist() for b in train_batches(7)]
    assert [b.tolist() for b in train_batches(7)] != [b.tolist() for b in train_batches(8)]


def test_epoch_batches_name_the_examples_of_each_step():
    batches = train_batches(seed=3)
    steps = steps_per_epoch(count=COUNT, batch_size=BATCH)
    for epoch, step in [(0, 0), (1, 4), (2, 2)]:
        expected = batches[epoch * steps + step].tolist()
        assert epoch_batches(seed=3, epoch=epoch, count=COUNT, batch_size=BATCH)[step].tolist() == expected


def test_epoch_order_is_the_same_eagerly_and_inside_dataset_map():
    eager = epoch_order(seed=5, epoch=2, count=COUNT).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(tf.constant(2, tf.int64)).map(
        lambda epoch: epoch_order(seed=5, epoch=epoch, count=COUNT))))
    assert np.array_equal(eager, mapped.numpy())
    assert sorted(eager.tolist()) == list(range(COUNT))


def test_eval_dataset_is_ordered_complete_and_labels_match():
    images, labels = arrays()
    batches = list(make_eval_dataset(images=images, labels=labels, spec=BatchSpec(num_classes=5, batch_size=BATCH)))
    assert [int(b[0].shape[0]) for b in batches] == [8, 8, 8, 8, 5]
    ids = np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in batches])
    assert ids.tolist() == list(range(COUNT))
    for batch_images, batch_labels in batches:
        assert batch_images.dtype == tf.uint8
        assert np.array_equal(np.argmax(batch_labels.numpy(), axis=1), labels[batch_images.numpy()[:, 0, 0, 0]])


def test_sparse_labels_option():
    images, labels = arrays()
    batch = next(iter(make_eval_dataset(images=images, labels=labels,
                                        spec=BatchSpec(num_classes=5, batch_size=BATCH, one_hot=False))))
    assert batch[1].dtype == tf.int32 and batch[1].shape == (8,)
