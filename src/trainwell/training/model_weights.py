"""A model file's declared sizes checked against what it holds, before anything is allocated: its HDF5 arrays against their stored bytes, the config's variables against those arrays.

A 17 KB .keras whose config asked for a 2.5-million-unit Dense layer took `trainwell doctor` to
6.7 GB before Keras found no weights to match; a 58 KB one whose HDF5 arrays were gzip-compressed
inside the archive (past the zip check: the zip member itself barely compresses) read 7 GB of
zeros. Now the weights file is inventoried from its metadata alone (h5py reads no array), and
while Keras builds the model every variable it asks for must be one of those arrays.
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import h5py
import keras
import numpy as np

from trainwell.params_limits import GIB, NETWORK_BYTES

# An array may declare at most this many times the bytes its file stores for it, plus a slack (the
# zip members' rule): Keras writes arrays uncompressed, so theirs is 1.
MAX_EXPANSION = 64
EXPANSION_SLACK = 1 << 20
# All arrays of a weights file together: a loaded model holds them, and Keras reads each once more.
MAX_WEIGHTS_BYTES = NETWORK_BYTES // 2
# Variables Keras may create that no array of the file holds (a layer's small state), in all.
UNSTORED_SLACK = 1 << 20


class DeclaredSizeError(Exception):
    """A weights file or config that declares more than it holds; the message says what and where."""


@dataclass
class Inventory:
    """The arrays of a weights file: how many of each shape, and their declared bytes in all."""

    shapes: Counter = field(default_factory=Counter)
    total_bytes: int = 0
    unstored_bytes: int = 0  # variables created so far that matched no array
    refusal: str = ""  # why only_stored_variables stopped a load, if it did


def _dataset_problem(name: str, dataset: h5py.Dataset) -> str | None:
    """Why one HDF5 array cannot be read safely, or None."""
    if dataset.dtype.kind not in "biuf":
        return f"its weights array {name!r} is of type {dataset.dtype}, not numbers"
    create = dataset.id.get_create_plist()
    if create.get_layout() == h5py.h5d.VIRTUAL or create.get_external_count():
        return f"its weights array {name!r} is stored in other files"
    declared = math.prod(dataset.shape or ()) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if declared > MAX_EXPANSION * stored + EXPANSION_SLACK:
        return (f"its weights array {name!r} declares {declared:,} bytes ({dataset.shape}, {dataset.dtype}) but "
                f"stores {stored:,} ({dataset.compression or 'no'} compression)")
    if dataset.chunks and math.prod(dataset.chunks) * dataset.dtype.itemsize > declared + EXPANSION_SLACK:
        return f"its weights array {name!r} is stored in chunks {dataset.chunks} larger than the array"
    return None


def inventory(weights: h5py.File) -> Inventory:
    """Every array of a weights file, from its metadata; raise DeclaredSizeError for one that
    declares more than it stores, a link to another file, or more than MAX_WEIGHTS_BYTES in all."""
    found = Inventory()
    pending: list[tuple[str, h5py.Group]] = [("", weights)]
    while pending:
        prefix, group = pending.pop()
        for key in group:
            name = f"{prefix}{key}"
            if not isinstance(group.get(key, getlink=True), h5py.HardLink):
                raise DeclaredSizeError(f"its weights file links {name!r} elsewhere")
            item = group[key]
            if isinstance(item, h5py.Group):
                pending.append((f"{name}/", item))
                continue
            problem = _dataset_problem(name, item)
            if problem:
                raise DeclaredSizeError(problem)
            found.shapes[tuple(item.shape)] += 1
            found.total_bytes += math.prod(item.shape or ()) * item.dtype.itemsize
            if found.total_bytes > MAX_WEIGHTS_BYTES:
                raise DeclaredSizeError(f"its weights declare more than {MAX_WEIGHTS_BYTES // GIB} GiB in all")
    return found


def _requested(layer: keras.layers.Layer, args: tuple, kwargs: dict) -> tuple[tuple[int, ...], int]:
    """(shape, bytes) of the variable an add_weight call asks for, read from its arguments alone."""
    shape = kwargs.get("shape", args[0] if args and not isinstance(args[0], str) else None)
    dtype = kwargs.get("dtype", args[2] if len(args) > 2 else None) or layer.variable_dtype
    try:
        itemsize = np.dtype(keras.backend.standardize_dtype(dtype)).itemsize
    except (TypeError, ValueError):
        itemsize = 8  # a dtype numpy cannot name: counted at the widest
    dimensions = tuple(int(size) for size in (shape or ()))
    return dimensions, math.prod(dimensions) * itemsize


@contextmanager
def only_stored_variables(stored: Inventory) -> Iterator[None]:
    """While Keras builds a model from a config, refuse (DeclaredSizeError) any variable whose shape
    no remaining array of `stored` has, beyond UNSTORED_SLACK bytes in all, before it is allocated.

    Layers create every variable through the public Layer.add_weight(shape=..., dtype=...); it is
    wrapped for the duration of the load, on this Keras only if that signature is as expected.
    """
    original = keras.layers.Layer.add_weight
    if not {"shape", "dtype"} <= set(inspect.signature(original).parameters):
        raise RuntimeError("keras.layers.Layer.add_weight no longer takes shape= and dtype=; "
                           "trainwell.training.model_weights needs updating for this Keras")
    remaining = Counter(stored.shapes)

    def checked(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        shape, size = _requested(layer, args, kwargs)
        if remaining[shape] > 0:
            remaining[shape] -= 1
        else:
            stored.unstored_bytes += size
            if stored.unstored_bytes > UNSTORED_SLACK:
                stored.refusal = (f"its config asks layer {layer.name!r} for a variable of shape {shape} ({size:,} "
                                  "bytes) that its weights file does not hold")
                raise DeclaredSizeError(stored.refusal)
        return original(layer, *args, **kwargs)

    keras.layers.Layer.add_weight = checked
    try:
        yield
    finally:
        keras.layers.Layer.add_weight = original
