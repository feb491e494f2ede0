"""Generated .keras archives that lie about their sizes: configs asking for more than the weights hold, HDF5 arrays declaring more than they store."""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

WEIGHTS = "model.weights.h5"


def members(source: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(source) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_archive(target: Path, contents: dict[str, bytes]) -> Path:
    """A .keras archive as Keras writes one (members stored, not deflated)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return target


def _config_lie(config: dict, rng: random.Random) -> str:
    """One size in the config set to what no weights file here holds; returns what was changed."""
    layers = config["config"]["layers"]
    candidates = []
    for layer in layers:
        settings = layer["config"]
        for key in ("units", "filters", "input_dim", "output_dim"):
            if isinstance(settings.get(key), int):
                candidates.append((layer, key))
        if isinstance(settings.get("kernel_size"), list):
            candidates.append((layer, "kernel_size"))
        if isinstance(settings.get("batch_shape"), list):
            candidates.append((layer, "batch_shape"))
        if isinstance((layer.get("build_config") or {}).get("input_shape"), list):
            candidates.append((layer, "build_config"))
    layer, key = rng.choice(candidates)
    huge = rng.choice([2_500_000, 10**8, 2**31 - 1, 2**40])
    settings = layer["config"]
    if key == "kernel_size":
        settings[key] = [min(huge, 65535)] * len(settings[key])
    elif key == "batch_shape":
        settings[key] = [None, *[min(huge, 10**9)] * (len(settings[key]) - 1)]
    elif key == "build_config":  # the input shape Keras builds the layer's weights for
        shape = layer["build_config"]["input_shape"]
        layer["build_config"]["input_shape"] = [*shape[:-1], huge]
        return f"{layer['class_name']}.build_config.input_shape={layer['build_config']['input_shape']}"
    else:
        settings[key] = huge
    return f"{layer['class_name']}.{key}={settings[key]}"


def config_lies(source: Path, folder: Path, count: int, seed: int = 0) -> dict[str, Path]:
    """`count` copies of a saved .keras whose config asks one layer for a huge size."""
    rng = random.Random(seed)
    original = members(source)
    made = {}
    for index in range(count):
        config = json.loads(original["config.json"])
        what = _config_lie(config, rng)
        made[f"config-{index}:{what}"] = write_archive(folder / f"config-{index}.keras",
                                                       {**original, "config.json": json.dumps(config).encode()})
    return made


def _rewrite_weights(original: bytes, change: Callable[[h5py.File, str], None]) -> bytes:
    """The weights file with its first array replaced by what `change` writes at that path."""
    with h5py.File(io.BytesIO(original), "r") as source:
        arrays: list[str] = []
        source.visititems(lambda name, item: arrays.append(name) if isinstance(item, h5py.Dataset) else None)
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as target:
            for name in arrays[1:]:
                target.create_dataset(name, data=source[name][()])
            change(target, arrays[0])
    return buffer.getvalue()


def _gzip_zeros(file: h5py.File, name: str) -> None:
    """256 MB of zeros in a few hundred KB, written a chunk at a time: gzip inside the HDF5, past
    any zip ratio check (the member holding it barely compresses)."""
    dataset = file.create_dataset(name, shape=(8192, 8192), dtype="f4", chunks=(1024, 1024), compression="gzip")
    block = np.zeros((1024, 1024), np.float32)
    for row in range(0, 8192, 1024):
        for column in range(0, 8192, 1024):
            dataset[row : row + 1024, column : column + 1024] = block


def _hdf5_changes(folder: Path) -> dict[str, Callable[[h5py.File, str], None]]:
    outside = folder / "outside.h5"
    with h5py.File(outside, "w") as other:
        other.create_dataset("x", data=np.zeros(4, np.float32))
    return {
        "gzip": _gzip_zeros,
        # 16 GB declared, nothing stored: reading it yields fill values, allocated whole.
        "unallocated": lambda file, name: file.create_dataset(name, shape=(65536, 65536), dtype="f4",
                                                              chunks=(256, 256)),
        "chunk-larger-than-array": lambda file, name: file.create_dataset(name, shape=(2,), maxshape=(None,), dtype="f4",
                                                                          chunks=(2**28,)),
        "external-raw-data": lambda file, name: file.create_dataset(name, shape=(2**20,), dtype="f4",
                                                                    external=[("/dev/zero", 0, 2**22)]),
        "external-link": lambda file, name: file.__setitem__(name, h5py.ExternalLink(str(outside), "x")),
        "soft-link": lambda file, name: file.__setitem__(name, h5py.SoftLink("/elsewhere")),
        "strings": lambda file, name: file.create_dataset(name, data=np.array([b"x" * 64] * 4)),
        "objects": lambda file, name: file.create_dataset(name, shape=(4,), dtype=h5py.vlen_dtype(np.float32)),
    }


def hdf5_lies(source: Path, folder: Path) -> dict[str, Path]:
    """Copies of a saved .keras whose weights file's first array lies about its size or place."""
    original = members(source)
    made = {}
    for name, change in _hdf5_changes(folder).items():
        weights = _rewrite_weights(original[WEIGHTS], change)
        made[f"hdf5-{name}"] = write_archive(folder / f"hdf5-{name}.keras", {**original, WEIGHTS: weights})
    made["npz-weights"] = write_archive(folder / "npz.keras", {**{key: value for key, value in original.items()
                                                                  if key != WEIGHTS}, "model.weights.npz": b"PK"})
    return made
