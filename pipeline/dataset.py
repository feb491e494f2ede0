"""The shared input pipeline: cached uint8 shards -> shuffled, batched, prefetched tf.data."""

from __future__ import annotations

import json
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


def make_dataset(
    *,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    one_hot: bool = True,
) -> tf.data.Dataset:
    """Batches of (uint8 images, labels) that cover every example exactly once per epoch.

    Shuffling happens on indices, and whole batches are gathered in one op: a per-element
    map is several times slower. The last partial batch is kept so no example is dropped.
    Images stay uint8; the model normalises them (on the accelerator, when there is one).
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    image_tensor = tf.convert_to_tensor(images)
    label_tensor = tf.convert_to_tensor(labels.astype(np.int32))
    count = len(images)
    indices = tf.data.Dataset.range(count)
    if shuffle and count:
        # reshuffle_each_iteration: a new order every epoch, deterministic given the seed.
        indices = indices.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    indices = indices.batch(batch_size)

    def gather(batch_indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch_labels = tf.gather(label_tensor, batch_indices)
        if one_hot:
            batch_labels = tf.one_hot(batch_labels, num_classes, dtype=tf.float32)
        return tf.gather(image_tensor, batch_indices), batch_labels

    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
