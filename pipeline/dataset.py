"""The shared input pipeline: cached uint8 shards -> shuffled, batched, prefetched tf.data."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.build import MANIFEST
from pipeline.errors import DataError


@dataclass
class CachedSplit:
    """One split held in memory: images (N, H, W, 3) uint8, integer labels (N,), and their source paths."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_manifest(cache_dir: str | Path) -> dict:
    path = Path(cache_dir) / MANIFEST
    if not path.exists():
        raise DataError(f"cache manifest '{path}' is missing; run `dvc repro build` first")
    return json.loads(path.read_text())


def load_split(*, cache_dir: str | Path, split: str) -> CachedSplit:
    """Load a split's shards into memory (the fast path for sets that fit the memory budget)."""
    manifest = read_manifest(cache_dir)
    if split not in manifest["splits"]:
        raise DataError(f"split '{split}' is not in the cache at '{cache_dir}'; have {sorted(manifest['splits'])}")
    entry = manifest["splits"][split]
    folder = Path(cache_dir) / split
    height, width, channels = manifest["image_shape"]
    if not entry["shards"]:
        images = np.zeros((0, height, width, channels), dtype=np.uint8)
        labels = np.zeros((0,), dtype=np.int32)
    else:
        images = np.concatenate([np.load(folder / shard["images"]) for shard in entry["shards"]])
        labels = np.concatenate([np.load(folder / shard["labels"]) for shard in entry["shards"]])
    paths = (folder / "paths.txt").read_text().splitlines()
    return CachedSplit(images=images, labels=labels, paths=paths, classes=manifest["classes"])


def epoch_order(*, seed: int, epoch: int | tf.Tensor, count: int) -> tf.Tensor:
    """The order of the training examples in one epoch: a stateless permutation of (seed, epoch).

    Because the order depends on nothing but (seed, epoch), a run resumed at epoch k sees
    exactly the batches an uninterrupted run sees, and a batch can be traced back to its files.
    """
    seed_pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed=seed_pair)


def batch_indices(*, seed: int, epoch: int, step: int, count: int, batch_size: int) -> np.ndarray:
    """Example indices that made up training batch `step` of `epoch` (for incident reports)."""
    order = epoch_order(seed=seed, epoch=epoch, count=count).numpy()
    return order[step * batch_size : (step + 1) * batch_size]


def steps_per_epoch(*, count: int, batch_size: int) -> int:
    """Batches in one full pass; the last may be partial and is never dropped."""
    return math.ceil(count / batch_size)


def _gatherer(images: np.ndarray, labels: np.ndarray, *, num_classes: int, one_hot: bool):
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    image_tensor = tf.convert_to_tensor(images)
    label_tensor = tf.convert_to_tensor(labels.astype(np.int32))

    def gather(batch_indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # One gather per batch: a per-element map is several times slower.
        batch_labels = tf.gather(label_tensor, batch_indices)
        if one_hot:
            batch_labels = tf.one_hot(batch_labels, num_classes, dtype=tf.float32)
        return tf.gather(image_tensor, batch_indices), batch_labels

    return gather


def make_train_dataset(
    *,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    seed: int,
    first_epoch: int,
    epochs: int,
    one_hot: bool = True,
) -> tf.data.Dataset:
    """Batches for epochs first_epoch..epochs-1 in one stream, each epoch a fresh seeded order.

    Pass it to fit() with steps_per_epoch=steps_per_epoch(...): batches never straddle two
    epochs, so every epoch covers every example exactly once (the last batch may be partial).
    Images stay uint8; the model normalises them on the accelerator.
    """
    count = len(images)
    gather = _gatherer(images, labels, num_classes=num_classes, one_hot=one_hot)
    indices = tf.data.Dataset.range(first_epoch, epochs).flat_map(
        lambda epoch: tf.data.Dataset.from_tensor_slices(epoch_order(seed=seed, epoch=epoch, count=count)).batch(
            batch_size
        )
    )
    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(
    *, images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int, one_hot: bool = True
) -> tf.data.Dataset:
    """Every example once, in file order (validation, test, prediction)."""
    gather = _gatherer(images, labels, num_classes=num_classes, one_hot=one_hot)
    indices = tf.data.Dataset.range(len(images)).batch(batch_size)
    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
