"""The shared input pipeline: cached uint8 shards -> shuffled, batched, prefetched tf.data."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow as tf

from trainwell.data.cache import ShardedSplit, open_split
from trainwell.training.augment import BatchAugmenter, example_seeds
from trainwell.training.batch_plan import (
    FILE_ORDER,
    batch_bounds,
    epoch_batches,
    epoch_order,
    local_replicas,
    shard_batch_bounds,
    shard_order,
    steps_per_epoch,
    streaming_epoch_batches,
    streaming_step_sizes,
    streaming_steps,
    within_shard_order,
)


@dataclass(frozen=True)
class BatchSpec:
    """What one input pipeline yields, whichever shape its split has (held or streamed).

    The labels (num_classes, one_hot), the global batch size, the order (seed=FILE_ORDER: every
    example once in file order; an int seed: epochs first_epoch..epochs-1, each a fresh seeded
    order), class weights as sample weights, the augmenter, and which replicas' slices of each
    global batch this pipeline yields (replicas, pipeline, pipelines: distribute_dataset passes
    them, `dataclasses.replace(spec, **shard)`).
    """

    num_classes: int
    batch_size: int
    seed: int | None = FILE_ORDER
    first_epoch: int = 0
    epochs: int = 1
    one_hot: bool = True
    class_weights: Mapping[int, float] | None = None
    augmenter: BatchAugmenter | None = None
    replicas: int = 1
    pipeline: int = 0
    pipelines: int = 1

    def in_file_order(self) -> BatchSpec:
        """The same labels, batch size and replicas, every example once in file order (validation,
        test, prediction): no seed, one epoch, no class weights and no augmentation."""
        return replace(self, seed=FILE_ORDER, first_epoch=0, epochs=1, class_weights=None, augmenter=None)


def prefetched(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The end of every trainwell pipeline: prefetched, with tf.data's autotuning optimiser off.

    The optimiser is a thread per iterator that re-plans buffer sizes and parallelism every few
    seconds, and an iterator's destruction waits for its current pass. Keras drops a live
    iterator at every validation and prediction (evaluate() and predict() start a fresh one and
    predict() has already begun the next), and fit() drops its own when it returns: on 2 busy
    cores each such wait took 8-19 s, and 18 s between the last epoch and fit() returning
    (measured with py-spy; tests/test_streaming.py checks every pipeline has it off). Off,
    AUTOTUNE means one call per core and a prefetch buffer that grows when the consumer waits;
    the values are the same either way.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _batch_finisher(spec: BatchSpec):
    """Gathered uint8 images and class indices -> what fit() takes: labels encoded, images
    augmented (per-example seeds from seed, epoch and example index), class weights as sample weights."""
    num_classes, one_hot, augmenter, seed = spec.num_classes, spec.one_hot, spec.augmenter, spec.seed or 0
    weight_table = None
    if spec.class_weights is not None:
        weight_table = tf.constant([spec.class_weights.get(index, 1.0) for index in range(num_classes)], tf.float32)

    def finish(images: tf.Tensor, class_indices: tf.Tensor, epoch: tf.Tensor, example_indices: tf.Tensor):
        batch: tuple = (images, tf.one_hot(class_indices, num_classes, dtype=tf.float32) if one_hot else class_indices)
        if weight_table is not None:
            # Class weights as per-example sample weights: works under every tf.distribute
            # strategy, where Keras' own class_weight (a Dataset.map) cannot reach.
            batch += (tf.gather(weight_table, class_indices),)
        if augmenter is not None:
            batch += (example_seeds(seed=seed, epoch=epoch, indices=example_indices),)
        return batch

    return finish


def _augmented(dataset: tf.data.Dataset, augmenter: BatchAugmenter | None) -> tf.data.Dataset:
    """Apply the augmenter to gathered batches (which then carry per-example seeds last), one
    batch at a time: see BatchAugmenter for why not in parallel."""
    if augmenter is None:
        return dataset

    def augment(images: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return (augmenter.apply(images, rest[-1]), *rest[:-1])

    return dataset.map(augment, num_parallel_calls=1, deterministic=True)


def _gatherer(images: np.ndarray, labels: np.ndarray, spec: BatchSpec):
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    image_tensor = tf.convert_to_tensor(images)
    label_tensor = tf.convert_to_tensor(labels.astype(np.int32))
    finish = _batch_finisher(spec)

    def gather(batch_indices: tf.Tensor, epoch: tf.Tensor) -> tuple[tf.Tensor, ...]:
        # One gather per batch: a per-element map is several times slower.
        return finish(tf.gather(image_tensor, batch_indices), tf.gather(label_tensor, batch_indices), epoch,
                      batch_indices)

    return gather


def _replica_slice(order: tf.Tensor, position: tf.Tensor, bounds_of, *, local: int, pipeline: int, replicas: int):
    """Element `position` of one input pipeline's stream: the slice of `order` for replica
    pipeline*local + position % local of global batch position // local, where bounds_of(step)
    gives that batch's (start, end) in `order`."""
    step, part = position // local, pipeline * local + position % local
    start, end = bounds_of(step)
    size = end - start
    return order[start + part * size // replicas : start + (part + 1) * size // replicas]


def _replica_batches(*, epochs: tf.data.Dataset, order_for, bounds: np.ndarray, spec: BatchSpec) -> tf.data.Dataset:
    """Index batches for one input pipeline: per global batch, this pipeline's replica slices.

    A global batch order[b[k]:b[k+1]] is cut into `spec.replicas` contiguous slices; pipeline p
    (one per worker) yields slices p*L .. p*L+L-1 for its L local replicas, in that order, which
    is how tf.distribute hands a pipeline's consecutive batches to its devices. So a worker
    gathers only its own examples (sharding by batch slice, not by dropping elements), and
    the union over replicas is exactly the single-device batch, whatever the device count.
    """
    local = local_replicas(spec.replicas, spec.pipelines)
    steps = len(bounds) - 1
    bound_tensor = tf.constant(bounds, tf.int64)

    def batches_of_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        order = order_for(epoch)
        return tf.data.Dataset.range(steps * local).map(lambda position: (_replica_slice(
            order, position, lambda step: (bound_tensor[step], bound_tensor[step + 1]),
            local=local, pipeline=spec.pipeline, replicas=spec.replicas), epoch))

    return epochs.flat_map(batches_of_epoch)


def make_train_dataset(*, images: np.ndarray, labels: np.ndarray, spec: BatchSpec) -> tf.data.Dataset:
    """Batches for epochs spec.first_epoch..spec.epochs-1 in one stream, each epoch a fresh seeded order.

    Pass it to fit() with steps_per_epoch=steps_per_epoch(...): batches never straddle two
    epochs, so every epoch covers every example exactly once. Images stay uint8; the model
    normalises them on the accelerator. Under tf.distribute, build it per input pipeline
    (see distribute.distribute_dataset) with the global batch_size.
    """
    seed = spec.seed
    if seed is FILE_ORDER:
        raise ValueError("training batches need a seed; every example once in file order is make_eval_dataset")
    count = len(images)
    gather = _gatherer(images, labels, spec)
    indices = _replica_batches(
        epochs=tf.data.Dataset.range(spec.first_epoch, spec.epochs),
        order_for=lambda epoch: epoch_order(seed=seed, epoch=epoch, count=count),
        bounds=batch_bounds(count=count, batch_size=spec.batch_size, replicas=spec.replicas),
        spec=spec,
    )
    # With augmentation the Python stage is the bottleneck; more gather threads only compete with it.
    parallel = 1 if spec.augmenter is not None else tf.data.AUTOTUNE
    gathered = indices.map(gather, num_parallel_calls=parallel, deterministic=True)
    return prefetched(_augmented(gathered, spec.augmenter))


def make_eval_dataset(*, images: np.ndarray, labels: np.ndarray, spec: BatchSpec) -> tf.data.Dataset:
    """Every example once, in file order (validation, test, prediction): the spec's labels, batch
    size and replicas; its order, class weights and augmenter are not used (spec.in_file_order)."""
    spec = spec.in_file_order()
    count, batch_size, replicas = len(images), spec.batch_size, spec.replicas
    gather = _gatherer(images, labels, spec)
    if count == 0:
        # No batches, but the element spec every consumer expects (gather takes the epoch too).
        return prefetched(tf.data.Dataset.range(0).batch(batch_size).map(
            lambda indices: gather(indices, tf.constant(0, tf.int64))))
    bounds = batch_bounds(count=count, batch_size=batch_size, replicas=min(replicas, count))
    indices = _replica_batches(
        epochs=tf.data.Dataset.range(1),
        order_for=lambda _: tf.range(count, dtype=tf.int64),
        bounds=bounds,
        spec=spec,
    )
    # A known length lets Keras size its progress bar and stop without an "ran out of data" warning.
    indices = indices.apply(tf.data.experimental.assert_cardinality((len(bounds) - 1) * (replicas // spec.pipelines)))
    return prefetched(indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


# -- streaming from shards: for splits larger than the memory budget ------------------------


def read_npy_tensor(path: tf.Tensor | str, *, dtype: tf.DType, tail_shape: tuple[int, ...]) -> tf.Tensor:
    """A .npy file (format 1.0, little-endian, C order, as build writes it) read with TF ops.

    tf.io.read_file goes through TF's filesystems, so s3:// shards stream the same way as
    local ones, inside the tf.data graph and without Python.
    """
    raw = tf.io.read_file(path)
    # Magic (6 bytes), version (2), header length (little-endian uint16), then the header.
    header_length = tf.cast(tf.io.decode_raw(tf.strings.substr(raw, 8, 2), tf.uint16)[0], tf.int32)
    start = 10 + header_length
    body = tf.io.decode_raw(tf.strings.substr(raw, start, tf.strings.length(raw) - start), dtype)
    return tf.reshape(body, [-1, *tail_shape])


def make_streaming_dataset(*, split: ShardedSplit, spec: BatchSpec) -> tf.data.Dataset:
    """Batches read shard by shard: at most one shard's pixels are in memory at a time.

    Per epoch the shard order is a stateless permutation of (seed, epoch) and each shard's
    examples a permutation of (seed, shard, epoch), so the stream is as reproducible and
    resumable as the in-memory one. spec.seed=FILE_ORDER streams every example once in file order
    (validation, test), each global batch split over the replicas like make_eval_dataset's.
    Training batches are cut within a shard; over several pipelines (workers) each pipeline
    streams only its own block of the epoch's batches, so it reads only its own shards (see
    streaming_epoch_batches).
    """
    plan = _ShardPlan.of(split, spec)
    shard_batches = _shard_batches(split, spec, plan)

    def batches_of_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        shards = len(split.counts)
        order = (tf.range(shards, dtype=tf.int64) if spec.seed is FILE_ORDER
                 else shard_order(seed=spec.seed, epoch=epoch, shards=shards))
        steps = tf.gather(plan.steps, order)
        starts = tf.cumsum(steps, exclusive=True)
        # This worker's block of the epoch's worker batches, as a (first, last) step range per shard;
        # shards outside the block are never read.
        first = tf.clip_by_value(plan.block_start - starts, 0, steps)
        last = tf.clip_by_value(plan.block_start + plan.block - starts, 0, steps)
        return (tf.data.Dataset.from_tensor_slices((order, first, last))
                .filter(lambda shard, first, last: last > first)
                .flat_map(lambda shard, first, last: shard_batches(epoch, shard, first, last)))

    dataset = _augmented(tf.data.Dataset.range(spec.first_epoch, spec.epochs).flat_map(batches_of_epoch),
                         spec.augmenter)
    if spec.seed is FILE_ORDER:
        steps = plan.block * plan.local
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps * (spec.epochs - spec.first_epoch)))
    return prefetched(dataset)


@dataclass(frozen=True)
class _ShardPlan:
    """A streamed pipeline's tables, as constants its tf.data functions index by shard: each shard's
    batch bounds (padded to one width), steps, example count, files and first example's index; a
    view's rows; this worker's block of worker batches; how a batch is cut into replica slices."""

    bounds: tf.Tensor
    steps: tf.Tensor
    counts: tf.Tensor
    image_files: tf.Tensor
    label_files: tf.Tensor
    offsets: tf.Tensor
    rows: tf.Tensor | None
    block: int
    block_start: int
    local: int
    slicing: dict[str, int]

    @classmethod
    def of(cls, split: ShardedSplit, spec: BatchSpec) -> _ShardPlan:
        replicas, pipeline = spec.replicas, spec.pipeline
        local = local_replicas(replicas, spec.pipelines)
        # Training shards by shard across workers (each reads only its stretch of shards; see
        # streaming_epoch_batches); evaluation slices every batch across replicas, so it sees every
        # example exactly once.
        workers = spec.pipelines if spec.seed is not None else 1
        shard_bounds = shard_batch_bounds(split, batch_size=spec.batch_size, replicas=replicas, workers=workers)
        width = max((len(bounds) for bounds in shard_bounds), default=1)
        padded = np.stack([np.pad(bounds, (0, width - len(bounds))) for bounds in shard_bounds]) if shard_bounds \
            else np.zeros((0, 1), np.int64)
        # Per worker and epoch: this many consecutive worker batches, starting at block_start (see _deal).
        block = streaming_steps(split=split, batch_size=spec.batch_size, replicas=replicas, workers=workers)
        return cls(
            bounds=tf.constant(padded, tf.int64),
            steps=tf.constant([len(bounds) - 1 for bounds in shard_bounds], tf.int64),
            counts=tf.constant(split.counts, tf.int64),
            image_files=tf.constant(split.image_files), label_files=tf.constant(split.label_files),
            offsets=tf.constant(split.offsets, tf.int64),
            # A view (ShardedSplit.select) uses some rows of each shard file: example i is row rows[i].
            rows=None if split.rows is None else tf.constant(split.rows, tf.int64),
            block=block, block_start=pipeline * block if workers > 1 else 0, local=local,
            # A training worker batch is this worker's alone: cut into its local replicas' slices. An
            # evaluation batch is global: this pipeline takes its replicas' slices of it.
            slicing={"local": local, "pipeline": pipeline if workers == 1 else 0, "replicas": replicas // workers})


def _shard_batches(split: ShardedSplit, spec: BatchSpec, plan: _ShardPlan):
    """(epoch, shard, first, last) -> that shard's batches first..last-1 of the epoch, this pipeline's
    replica slices of each, read from the shard's files."""
    seed, finish = spec.seed, _batch_finisher(spec)

    def shard_batches(epoch: tf.Tensor, shard: tf.Tensor, first: tf.Tensor, last: tf.Tensor) -> tf.data.Dataset:
        images = read_npy_tensor(plan.image_files[shard], dtype=tf.uint8, tail_shape=split.image_shape)
        labels = read_npy_tensor(plan.label_files[shard], dtype=tf.int32, tail_shape=())
        if seed is FILE_ORDER:
            order = tf.range(plan.counts[shard])
        else:
            order = within_shard_order(seed=seed, epoch=epoch, shard=shard, count=plan.counts[shard])

        def replica_batch(position: tf.Tensor) -> tuple[tf.Tensor, ...]:
            indices = _replica_slice(order, position, lambda step: (plan.bounds[shard, step], plan.bounds[shard, step + 1]),
                                     **plan.slicing)
            rows = indices if plan.rows is None else tf.gather(plan.rows, plan.offsets[shard] + indices)
            return finish(tf.gather(images, rows), tf.gather(labels, rows), epoch, plan.offsets[shard] + indices)

        return tf.data.Dataset.range(first * plan.local, last * plan.local).map(
            replica_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return shard_batches


# Peak RSS of the in-memory path per byte of decoded images: the arrays, the tensor tf.data
# gathers from, and the copies TF makes of it (measured: +794 MiB for a 193 MiB split).
IN_MEMORY_COST = 4


@dataclass
class SplitInput(ABC):
    """How one split (or view of one) feeds Keras: InMemoryInput or StreamedInput, one interface.

    Batch plans (steps, epoch_batches, step_sizes) say eagerly what the datasets yield, for
    fit()'s step counts and the guard's incident records; train_dataset and eval_dataset are the
    tf.data pipelines, shaped by a BatchSpec.
    """

    split: ShardedSplit
    streaming: ClassVar[bool]  # for messages: whether the split is read shard by shard

    @property
    @abstractmethod
    def memory_cost(self) -> int:
        """Bytes of the memory budget this input takes (IN_MEMORY_COST x its decoded size, or 0)."""

    @abstractmethod
    def steps(self, *, batch_size: int, replicas: int = 1, workers: int = 1) -> int:
        """Steps of one epoch: of training over `workers` input pipelines, or with workers=1 of
        evaluation (which every worker runs over the whole split)."""

    @abstractmethod
    def shards_by_worker(self, workers: int) -> bool:
        """Whether training over `workers` workers shards this split by shard (each worker reads
        its own shards; up to workers - 1 worker batches sit out each epoch) rather than giving
        every worker its slice of every global batch (exact coverage)."""

    @abstractmethod
    def epoch_batches(self, *, seed: int, epoch: int, batch_size: int, replicas: int = 1,
                      workers: int = 1) -> list[np.ndarray]:
        """Example indices of each global batch of a training epoch, in the order fit() sees them."""

    @abstractmethod
    def step_sizes(self, *, seed: int, epoch: int, batch_size: int, replicas: int = 1, workers: int = 1) -> list[int]:
        """Images in each global batch of a training epoch."""

    @abstractmethod
    def train_dataset(self, spec: BatchSpec) -> tf.data.Dataset:
        """Training batches in the (spec.seed, epoch) order, epochs spec.first_epoch..spec.epochs-1."""

    @abstractmethod
    def eval_dataset(self, spec: BatchSpec) -> tf.data.Dataset:
        """Every example once, in file order (spec.in_file_order)."""

    @abstractmethod
    def image(self, index: int) -> np.ndarray:
        """One image by its index in the split."""


@dataclass
class InMemoryInput(SplitInput):
    """The split's decoded images held in memory (the fast path): tf.data gathers each batch from them."""

    images: np.ndarray
    streaming: ClassVar[bool] = False

    @property
    def memory_cost(self) -> int:
        return IN_MEMORY_COST * self.split.image_bytes

    def steps(self, *, batch_size: int, replicas: int = 1, workers: int = 1) -> int:
        return steps_per_epoch(count=len(self.split.labels), batch_size=batch_size, replicas=replicas)

    def shards_by_worker(self, workers: int) -> bool:
        return False  # every worker holds the split and takes its slice of every global batch

    def epoch_batches(self, *, seed: int, epoch: int, batch_size: int, replicas: int = 1,
                      workers: int = 1) -> list[np.ndarray]:
        return epoch_batches(seed=seed, epoch=epoch, count=len(self.split.labels), batch_size=batch_size,
                             replicas=replicas)

    def step_sizes(self, *, seed: int, epoch: int, batch_size: int, replicas: int = 1, workers: int = 1) -> list[int]:
        return np.diff(batch_bounds(count=len(self.split.labels), batch_size=batch_size, replicas=replicas)).tolist()

    def train_dataset(self, spec: BatchSpec) -> tf.data.Dataset:
        return make_train_dataset(images=self.images, labels=self.split.labels, spec=spec)

    def eval_dataset(self, spec: BatchSpec) -> tf.data.Dataset:
        return make_eval_dataset(images=self.images, labels=self.split.labels, spec=spec)

    def image(self, index: int) -> np.ndarray:
        return self.images[index]


@dataclass
class StreamedInput(SplitInput):
    """The split read from its shards a shard at a time, inside the tf.data graph."""

    streaming: ClassVar[bool] = True

    @property
    def memory_cost(self) -> int:
        return 0  # a shard at a time: TF's working set, not the budget's

    def steps(self, *, batch_size: int, replicas: int = 1, workers: int = 1) -> int:
        return streaming_steps(split=self.split, batch_size=batch_size, replicas=replicas, workers=workers)

    def shards_by_worker(self, workers: int) -> bool:
        return workers > 1

    def epoch_batches(self, *, seed: int, epoch: int, batch_size: int, replicas: int = 1,
                      workers: int = 1) -> list[np.ndarray]:
        return streaming_epoch_batches(split=self.split, seed=seed, epoch=epoch, batch_size=batch_size,
                                       replicas=replicas, workers=workers)

    def step_sizes(self, *, seed: int, epoch: int, batch_size: int, replicas: int = 1, workers: int = 1) -> list[int]:
        return streaming_step_sizes(split=self.split, seed=seed, epoch=epoch, batch_size=batch_size,
                                    replicas=replicas, workers=workers)

    def train_dataset(self, spec: BatchSpec) -> tf.data.Dataset:
        if spec.seed is FILE_ORDER:
            raise ValueError("training batches need a seed; every example once in file order is eval_dataset")
        return make_streaming_dataset(split=self.split, spec=spec)

    def eval_dataset(self, spec: BatchSpec) -> tf.data.Dataset:
        return make_streaming_dataset(split=self.split, spec=spec.in_file_order())

    def image(self, index: int) -> np.ndarray:
        return self.split.image(index)  # read from its shard


def choose_split_input(split: ShardedSplit, *, memory_budget_bytes: int) -> SplitInput:
    """One split (or view of one) in memory if what that costs (IN_MEMORY_COST x its decoded
    size) fits the budget, else streamed a shard at a time."""
    if IN_MEMORY_COST * split.image_bytes <= memory_budget_bytes:
        return InMemoryInput(split=split, images=split.load_images())
    return StreamedInput(split=split)


def plan_inputs(*, cache_dir: str | Path, splits: list[str], memory_budget_bytes: int) -> dict[str, SplitInput]:
    """Each split in memory while what that costs (IN_MEMORY_COST x its decoded size, running
    total) fits the budget; streamed from then on (a shard at a time, about 75 MiB in all here)."""
    plans, left = {}, memory_budget_bytes
    for name in splits:
        plans[name] = choose_split_input(open_split(cache_dir=cache_dir, split=name), memory_budget_bytes=left)
        left -= plans[name].memory_cost
    return plans
