"""Albumentations on whole uint8 batches, each example seeded from (seed, epoch, example index)."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import warnings
import weakref
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import shared_memory

import numpy as np

from trainwell.errors import ParamsError
from trainwell.params import AugmentStep

# TensorFlow is imported inside the two functions that need it: worker processes import this
# module to augment and should not pay for (or start) TensorFlow.


def example_seeds(*, seed: int, epoch, indices):
    """One int64 per example from (seed, epoch, example index) alone: the augmentation an image
    gets does not depend on which batch, replica, thread or process it lands in."""
    import tensorflow as tf

    epoch = tf.cast(epoch, tf.int64)
    return (tf.constant(seed, tf.int64) * 1_000_003 + epoch) * 2_147_483_647 + tf.cast(indices, tf.int64)


class BatchAugmenter:
    """The transforms train.augment lists, applied to a (N, H, W, 3) uint8 batch in one Python call.

    One Python call per batch, never per element, and one call at a time (the pipeline maps it
    with num_parallel_calls=1): albumentations is mostly Python between OpenCV calls, so two
    threads fighting over the GIL delivered 2.7k images/s where one delivered 5.7k (bare loop
    7.1k). Other cores help through `processes` worker processes, each augmenting a share of
    the batch. Every thread and process has its own Compose and random state, re-keyed per
    example (Philox key = the example's seed, a few us), so results do not depend on threads,
    processes or batching.
    """

    def __init__(self, steps: list[AugmentStep], *, processes: int = 0) -> None:
        self.steps = steps
        self.processes = processes
        self._local = threading.local()
        self._pool: ProcessPoolExecutor | None = None
        self._shared: shared_memory.SharedMemory | None = None
        self._release: weakref.finalize | None = None
        # The pool and its one shared block serve one batch at a time, whichever thread calls.
        self._lock = threading.Lock()
        self._state()  # build once now: a bad transform name or argument fails before training

    def _build(self):
        import albumentations

        transforms = []
        for number, step in enumerate(self.steps, start=1):
            transform_class = getattr(albumentations, step.name, None)
            if not isinstance(transform_class, type) or not issubclass(
                transform_class, albumentations.core.transforms_interface.BasicTransform
            ):
                raise ParamsError(
                    f"train.augment step {number}: '{step.name}' is not an albumentations transform; use a class "
                    "name from https://albumentations.ai/docs/api-reference/ such as HorizontalFlip, Affine, "
                    "RandomBrightnessContrast"
                )
            try:
                # albumentations only warns about unknown arguments and would train without them.
                with warnings.catch_warnings():
                    warnings.filterwarnings("error", message=".*are not valid for transform")
                    transforms.append(transform_class(**step.params))
            except Exception as exc:  # pydantic validation, TypeError, or the warning above
                raise ParamsError(f"train.augment step {number} ({step.name}): invalid params {step.params}: {exc}") \
                    from None
        return albumentations.Compose(transforms)

    def _state(self) -> tuple:
        state = getattr(self._local, "state", None)
        if state is None:
            compose = self._build()
            bit_generator, py_random = np.random.Philox(0), random.Random(0)
            compose.set_random_state(np.random.Generator(bit_generator), py_random)
            state = self._local.state = (compose, bit_generator, py_random)
        return state

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Augment a batch: a share in each worker process, the first share in this thread."""
        if not self.processes or len(images) < 2 * (self.processes + 1):
            return self.augment_here(images, seeds)
        with self._lock:
            return self._augment_shared(images, seeds)

    def _augment_shared(self, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        if self._pool is None:
            # spawn, not fork: the parent runs TensorFlow's threads, which a fork would copy mid-flight.
            self._pool = ProcessPoolExecutor(max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(self.steps,))
            # Shut down while the interpreter is still whole (left to garbage collection at exit,
            # the executor's manager thread fails on half-torn-down modules).
            weakref.finalize(self, self._pool.shutdown, wait=True, cancel_futures=True)
        if self._shared is None or self._shared.size < images.nbytes:
            if self._release is not None:
                self._release()
            self._shared = shared_memory.SharedMemory(create=True, size=images.nbytes)
            # Unlinked when the augmenter goes away or the interpreter exits, whichever is first.
            self._release = weakref.finalize(self, _release_block, self._shared)
        # Pixels travel through shared memory, not pickles: pickling a 128-image share each way
        # cost 7 ms against 22 ms of augmenting it.
        out: np.ndarray = np.ndarray(images.shape, dtype=np.uint8, buffer=self._shared.buf)
        out[...] = images
        # The pipeline thread takes a larger share: the workers also pay the hand-over.
        weights = np.array([1.5] + [1.0] * self.processes)
        bounds = (np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * len(images)).round().astype(int)
        futures = [self._pool.submit(_augment_shared, self._shared.name, images.shape, seeds, start, end)
                   for start, end in zip(bounds[1:-1], bounds[2:])]
        out[: bounds[1]] = self.augment_here(images[: bounds[1]], seeds[: bounds[1]])
        for future in futures:
            future.result()
        return out.copy()

    def augment_here(self, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        compose, bit_generator, py_random = self._state()
        out = np.empty_like(images)
        key = np.zeros(2, np.uint64)
        state = {
            "bit_generator": "Philox",
            "state": {"counter": np.zeros(4, np.uint64), "key": key},
            "buffer": np.zeros(4, np.uint64),
            "buffer_pos": 4,
            "has_uint32": 0,
            "uinteger": 0,
        }
        for position, (image, example_seed) in enumerate(zip(images, seeds.view(np.uint64))):
            key[0] = example_seed  # the setter copies the arrays: reusing them is safe
            bit_generator.state = state
            py_random.seed(int(example_seed))
            augmented = compose(image=image)["image"]
            if augmented.shape != image.shape:
                raise ParamsError(
                    f"train.augment changed an image from {image.shape} to {augmented.shape}; batches need one size, "
                    "so use size-preserving transforms (or end the list with a Resize to data.image_size)"
                )
            out[position] = augmented
        return out

    def apply(self, images, seeds):
        """The tf.data side: one numpy_function call for the whole batch."""
        import tensorflow as tf

        augmented = tf.numpy_function(self, [images, seeds], tf.uint8, stateful=False)
        augmented.set_shape(images.shape)
        return augmented


def _release_block(block: shared_memory.SharedMemory) -> None:
    block.close()
    block.unlink()


def default_processes() -> int:
    """Worker processes for augmentation: one per core beyond the first (which runs this thread)."""
    return max(0, (os.cpu_count() or 1) - 1)


_worker_augmenter: BatchAugmenter | None = None


def _start_worker(steps: list[AugmentStep]) -> None:
    global _worker_augmenter
    import cv2

    # One OpenCV thread per process: the processes already fill the cores.
    cv2.setNumThreads(1)
    _worker_augmenter = BatchAugmenter(steps)


_attached: dict[str, shared_memory.SharedMemory] = {}


def _augment_shared(name: str, shape: tuple[int, ...], seeds: np.ndarray, start: int, end: int) -> None:
    """Augment rows start:end of the batch in shared memory `name`, in place."""
    if _worker_augmenter is None:
        raise RuntimeError("augmentation worker started without its transforms")
    if name not in _attached:
        for old in _attached.values():
            old.close()
        _attached.clear()
        # Spawned workers share the parent's resource tracker, so attaching registers nothing new;
        # the parent, which created the block, unlinks it.
        _attached[name] = shared_memory.SharedMemory(name=name)
    batch: np.ndarray = np.ndarray(shape, dtype=np.uint8, buffer=_attached[name].buf)
    batch[start:end] = _worker_augmenter.augment_here(batch[start:end], seeds[start:end])
