"""Classifying files with a trained model: its shape checked, the build stage's decode path inside a batched,
prefetching tf.data pipeline, and its scores checked to be probabilities."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from trainwell import storage
from trainwell.data.decode import DecodeError, max_file_bytes, prepare_image
from trainwell.errors import UsageError
from trainwell.training.inputs import prefetched


def check_prediction_model(model: keras.Model, *, classes: list[str]) -> None:
    """The model must take (size, size, 3) images and give one row of len(classes) scores per image."""
    inputs, outputs = model.inputs, model.outputs
    shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
    if len(shape) != 4 or not isinstance(shape[1], int) or shape[1] != shape[2] or shape[3] != 3:
        raise UsageError(f"the model takes {[tuple(tensor.shape) for tensor in inputs]}; trainwell predict needs one "
                         "input of square RGB images, (None, size, size, 3), as `trainwell train` makes")
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise UsageError(f"the model gives {[tuple(tensor.shape) for tensor in outputs]}; trainwell predict needs one "
                         "output of class scores, (None, classes)")
    if int(outputs[0].shape[-1]) != len(classes):
        raise UsageError(f"the model scores {outputs[0].shape[-1]} classes but {len(classes)} class names were "
                         f"given ({', '.join(classes)[:200]}); pass --classes with one name per output, in label order")


def prediction_dataset(
    *, locations: list[str], image_size: int, max_pixels: int, batch_size: int, failures: dict[int, str],
    digests: list[bytes] | None = None,
) -> tf.data.Dataset:
    """Batches of uint8 images, decoded in parallel by `prepare_image` (the code `build` caches with).

    A file that fails now (changed or removed since it was checked) yields a black image and
    its reason in `failures` under its position; the caller reports it and drops its row, so
    that image is never classified. With `digests` (storage.content_digest of the bytes each
    file had when its check decoded it within audit.file_timeout_s), bytes that differ are not
    decoded here at all: this decode runs in this process, where nothing could stop a decoder
    held up by bytes that no check has timed.
    """
    lock = threading.Lock()

    def load(position: np.ndarray) -> np.ndarray:
        index = int(position)
        location = locations[index]
        try:
            data = storage.read_regular_file(location, max_bytes=max_file_bytes(max_pixels))
            # numpy's S16 digests drop trailing NUL bytes: compared the same way.
            if digests is not None and storage.content_digest(data).rstrip(b"\0") != digests[index].rstrip(b"\0"):
                raise _Changed
            return prepare_image(data, suffix=os.path.splitext(location)[1], size=image_size, max_pixels=max_pixels)
        except _Changed:
            reason = "changed: the file's bytes changed after it was checked; not decoded again (classify it again)"
        except storage.FileTooLarge as exc:
            reason = f"too_large: {exc}"
        except OSError as exc:
            reason = f"unreadable: {exc.strerror or exc}"
        except DecodeError as exc:
            reason = str(exc)
        except Exception as exc:  # whatever a decoder raises, one file never stops the others
            reason = f"corrupt: {type(exc).__name__}: {str(exc)[:200]}"
        with lock:
            failures[index] = reason
        return np.zeros((image_size, image_size, 3), np.uint8)

    def load_tensor(position: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(load, [position], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (image_size, image_size, 3))

    return prefetched(tf.data.Dataset.range(len(locations))
                      .map(load_tensor, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                      .batch(max(1, min(batch_size, len(locations)))))  # .batch allocates its full size up front


class _Changed(Exception):
    """A file's bytes are not the ones its check decoded."""


class _BatchProgress(keras.callbacks.Callback):
    """Calls back with the number of images classified so far, once per batch."""

    def __init__(self, *, batch_size: int, total: int, report: Callable[[int], None]):
        super().__init__()
        self.batch_size, self.total, self.report = batch_size, total, report

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.report(min((batch + 1) * self.batch_size, self.total))


def predict_files(
    *,
    model: keras.Model,
    locations: list[str],
    max_pixels: int,
    batch_size: int,
    report: Callable[[int], None] | None = None,
    digests: list[bytes] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Class probabilities (len(locations), classes) and the positions that failed to decode, with
    why; `digests` as in prediction_dataset."""
    failures: dict[int, str] = {}
    if not locations:
        return np.zeros((0, int(model.output_shape[-1])), np.float32), failures
    dataset = prediction_dataset(locations=locations, image_size=int(model.input_shape[1]), max_pixels=max_pixels,
                                 batch_size=batch_size, failures=failures, digests=digests)
    callbacks = [_BatchProgress(batch_size=batch_size, total=len(locations), report=report)] if report else []
    probabilities = model.predict(dataset, verbose=0, callbacks=callbacks)
    return np.asarray(probabilities, dtype=np.float32), failures


def top_k(probabilities: np.ndarray, *, classes: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Per row, the k most probable (class, probability) pairs, most probable first (ties: label order)."""
    k = max(1, min(k, len(classes)))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[(classes[column], float(row[column])) for column in columns] for row, columns in zip(probabilities, order)]


def non_probability_rows(probabilities: np.ndarray, positions: list[int]) -> dict[int, str]:
    """Rows the model scored with something other than probabilities (NaN, inf, outside [0, 1], not
    summing to 1), as {positions[row]: reason}."""
    finite = np.isfinite(probabilities).all(axis=1)
    in_range = ((probabilities >= 0) & (probabilities <= 1)).all(axis=1) & (np.abs(probabilities.sum(axis=1) - 1) < 1e-3)
    return {positions[index]: ("model_output: the model's scores are not finite" if not finite[index] else
                               "model_output: the model's scores are not probabilities (outside [0, 1] or not "
                               "summing to 1); is its head softmax?")
            for index in np.flatnonzero(~(finite & in_range))}
