"""The batch plan: which examples make each step of an epoch, in memory or streamed by shard, on any worker count.

Plain numbers (numpy), apart from the seeded orders, which use TensorFlow's stateless shuffle
so the tf.data pipelines can draw the very same orders inside the graph. The pipelines in
`inputs` follow this plan; the guard names the files of a bad batch from it, and the step
counts fit() gets come from it.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from trainwell.data.cache import ShardedSplit
from trainwell.errors import DataError

# Where a streamed pipeline takes an order: FILE_ORDER (every example once, shards and examples in
# file order: evaluation), or an int seed (the shuffled (seed, epoch) training order).
FILE_ORDER = None


def epoch_order(*, seed: int, epoch: int | tf.Tensor, count: int) -> tf.Tensor:
    """The order of the training examples in one epoch: a stateless permutation of (seed, epoch).

    Because the order depends on nothing but (seed, epoch), a run resumed at epoch k sees
    exactly the batches an uninterrupted run sees, and a batch can be traced back to its files.
    """
    seed_pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed=seed_pair)


def batch_bounds(*, count: int, batch_size: int, replicas: int = 1) -> np.ndarray:
    """Offsets where each batch of an epoch starts, plus the end: batch k is order[b[k]:b[k+1]].

    Batches hold batch_size examples (the global batch, split across replicas); the last may be
    partial and is never dropped. With several replicas every replica needs at least one
    example per step (Keras' mean loss over an empty batch is 0/0 = NaN), so a remainder
    smaller than the replica count joins the batch before it.
    """
    if count < replicas:
        raise DataError(
            f"{count} training images cannot give each of {replicas} replicas an example; "
            "add data or use fewer devices (train.strategy: default)"
        )
    bounds = list(range(0, count, batch_size)) + [count]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < replicas:
        del bounds[-2]
    return np.asarray(bounds, dtype=np.int64)


def epoch_batches(*, seed: int, epoch: int, count: int, batch_size: int, replicas: int = 1) -> list[np.ndarray]:
    """Example indices of every training batch of `epoch`, in order (for incident reports)."""
    order = epoch_order(seed=seed, epoch=epoch, count=count).numpy()
    bounds = batch_bounds(count=count, batch_size=batch_size, replicas=replicas)
    return [order[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def steps_per_epoch(*, count: int, batch_size: int, replicas: int = 1) -> int:
    """Batches in one full pass (see batch_bounds)."""
    return len(batch_bounds(count=count, batch_size=batch_size, replicas=replicas)) - 1


def local_replicas(replicas: int, pipelines: int) -> int:
    """Replicas fed by each input pipeline (one pipeline per worker)."""
    if replicas % pipelines:
        raise ValueError(f"{replicas} replicas do not divide evenly over {pipelines} input pipelines")
    return replicas // pipelines


def shard_order(*, seed: int, epoch: int | tf.Tensor, shards: int) -> tf.Tensor:
    return epoch_order(seed=seed, epoch=epoch, count=shards)


def within_shard_order(*, seed: int, epoch: int | tf.Tensor, shard: int | tf.Tensor, count: int | tf.Tensor) -> tf.Tensor:
    # A seed per (seed, shard) and the epoch as the second half: every shard reshuffles every epoch.
    seed_pair = tf.stack([tf.constant(seed, tf.int64) + 1_000_003 * (tf.cast(shard, tf.int64) + 1),
                          tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(tf.cast(count, tf.int64)), seed=seed_pair)


def worker_batch(batch_size: int, workers: int) -> int:
    """Examples each worker takes per step when the training split streams (shard-level sharding)."""
    if batch_size % workers:
        raise DataError(
            f"train.batch_size {batch_size} is not a multiple of the {workers} workers: a streamed training split "
            f"is sharded by shard, so each worker takes batch_size / workers examples per step; use "
            f"{batch_size - batch_size % workers or workers} or {batch_size + workers - batch_size % workers}"
        )
    return batch_size // workers


def shard_batch_bounds(split: ShardedSplit, *, batch_size: int, replicas: int, workers: int) -> list[np.ndarray]:
    """Per shard, the bounds of its worker batches (see batch_bounds; never straddling shards)."""
    size, local = worker_batch(batch_size, workers), local_replicas(replicas, workers)
    return [batch_bounds(count=count, batch_size=size, replicas=local) for count in split.counts]


def streaming_steps(*, split: ShardedSplit, batch_size: int, replicas: int = 1, workers: int = 1) -> int:
    """Training steps in one streamed epoch: the epoch's worker batches dealt out in equal
    contiguous blocks, one per worker (the last total % workers are left for that epoch)."""
    bounds = shard_batch_bounds(split, batch_size=batch_size, replicas=replicas, workers=workers)
    total = sum(len(shard) - 1 for shard in bounds)
    if workers > 1 and total < workers:
        raise DataError(
            f"the streamed training split holds {total} worker batch(es) of {batch_size // workers} images per epoch, "
            f"fewer than the {workers} workers; lower train.batch_size or use fewer workers"
        )
    return total // workers


def streaming_epoch_batches(*, split: ShardedSplit, seed: int | None, epoch: int, batch_size: int,
                            replicas: int = 1, workers: int = 1) -> list[np.ndarray]:
    """The example indices of every global batch of one streamed epoch, in order (for the guard's
    incident reports and for tests). seed=FILE_ORDER is the evaluation order: shards and examples in
    file order, every example once, whatever the worker count.

    With several workers the training epoch is sharded by shard: the epoch's worker batches (in
    shard order, batch_size / workers each) are dealt out in contiguous blocks, so each worker
    reads only its own stretch of shards, and global batch t is the t-th batch of every block.
    """
    if seed is FILE_ORDER:
        workers = 1
    offsets = split.offsets
    shard_sequence = (range(len(split.counts)) if seed is FILE_ORDER
                      else shard_order(seed=seed, epoch=epoch, shards=len(split.counts)).numpy())
    shard_bounds = shard_batch_bounds(split, batch_size=batch_size, replicas=replicas, workers=workers)
    worker_batches = []
    for shard in shard_sequence:
        count = split.counts[shard]
        within = (np.arange(count) if seed is FILE_ORDER
                  else within_shard_order(seed=seed, epoch=epoch, shard=int(shard), count=count).numpy())
        bounds = shard_bounds[shard]
        worker_batches += [offsets[shard] + within[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
    return [np.concatenate(parts) for parts in _deal(worker_batches, workers)]


def _deal(worker_batches: list, workers: int) -> list[list]:
    """The worker batches of each global step: step t takes the t-th of each worker's equal
    contiguous block of the epoch's worker batches (the last len % workers sit out)."""
    steps = len(worker_batches) // workers
    return [[worker_batches[worker * steps + step] for worker in range(workers)] for step in range(steps)]


def streaming_step_sizes(*, split: ShardedSplit, seed: int, epoch: int, batch_size: int, replicas: int = 1,
                         workers: int = 1) -> list[int]:
    """Examples in each global batch of a streamed training epoch (streaming_epoch_batches' lengths,
    from the shard order alone)."""
    shard_bounds = shard_batch_bounds(split, batch_size=batch_size, replicas=replicas, workers=workers)
    shards = shard_order(seed=seed, epoch=epoch, shards=len(split.counts)).numpy()
    sizes = [int(size) for shard in shards for size in np.diff(shard_bounds[shard])]
    return [sum(parts) for parts in _deal(sizes, workers)]


def fitting_steps_per_execution(requested: int, *step_counts: int) -> int:
    """The largest value <= requested that divides every epoch's step count.

    Keras runs a compiled call of steps_per_execution batches whole, so a count that does not
    divide the epoch would pull batches of the next epoch into this one (and, for validation,
    count some images twice).
    """
    common = math.gcd(*step_counts) if step_counts else 1
    return max(value for value in range(1, requested + 1) if common % value == 0)
