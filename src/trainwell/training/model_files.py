"""Loading a Keras model file that may be hostile: only .keras archives, checked before Keras reads a byte of them.

Keras' HDF5 and SavedModel loaders run code stored in the file (a Lambda layer's bytecode)
whatever safe_mode says, and safe_mode itself has been bypassed by crafted configs again and
again (CVE-2025-1550 in Keras 3.8: a layer whose "module" names os.system; more fixed up to 3.14,
while Python 3.10 can have no Keras newer than 3.12). So a .keras archive is opened as a zip
first, whatever Keras is installed: member names must stay inside the archive, member sizes are
bounded (a 1.5 MB file once unpacked to 1.5 GB), and every object its config names must come
from Keras itself.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Any

import h5py
import keras

from trainwell.errors import UsageError
from trainwell.outputs import check_output, write_error
from trainwell.training.model_weights import DeclaredSizeError, Inventory, inventory, only_stored_variables

# An archive member may unpack to at most this many times its compressed size, plus a slack
# for small, highly compressible arrays (biases of zeros): weights of a trained model barely
# compress, while a zip bomb expands a thousandfold.
MAX_EXPANSION = 64
EXPANSION_SLACK = 1 << 20
MAX_CONFIG_BYTES = 16 << 20
# The only modules a config may name objects from: Keras' own (public and private paths).
ALLOWED_PACKAGE = "keras"
# Serialized objects that are code: a named function (any importable callable) or a lambda's bytecode.
CODE_CARRYING = ("function", "__lambda__")


def _refuse(path: Path, why: str) -> UsageError:
    return UsageError(f"'{path}' was not loaded: {why}. Re-save the model with model.save('model.keras') "
                      "from code you trust, or, only for a file you made yourself, pass --trust-model")


def _refuse_sizes(path: Path, why: str) -> UsageError:
    # --trust-model does not help here: sizes are checked for every file.
    return UsageError(f"'{path}' was not loaded: {why}. A model file must hold every weight its config declares; "
                      "re-save the model with model.save('model.keras')")


def _named_objects(node: Any) -> Iterator[tuple[str, str]]:
    """(module, class_name) of every serialized object in a Keras config, at any depth."""
    pending = [node]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if "class_name" in item:
                yield str(item.get("module") or ""), str(item.get("class_name"))
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def check_keras_archive(path: Path) -> None:
    """Raise UsageError unless `path` is a .keras zip of bounded size whose config names only Keras objects."""
    if not zipfile.is_zipfile(path):
        raise _refuse(path, "it is not a .keras archive (a zip file)")
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: info for info in archive.infolist()}
        for info in members.values():
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in info.filename:
                raise _refuse(path, f"its member {info.filename!r} points outside the archive")
            if info.file_size > MAX_EXPANSION * info.compress_size + EXPANSION_SLACK:
                raise _refuse(path, f"its member {info.filename!r} would unpack from {info.compress_size} to "
                                    f"{info.file_size} bytes (a zip bomb)")
        config = members.get("config.json")
        if config is None or config.file_size > MAX_CONFIG_BYTES:
            raise _refuse(path, "it holds no config.json of a sane size")
        try:
            document = json.loads(archive.read(config))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _refuse(path, f"its config.json is not valid JSON ({exc})") from None
    for module, class_name in _named_objects(document):
        # Keras' own markers (__keras_tensor__, __tensor__, __numpy__, ...) carry data; these carry code.
        if class_name in CODE_CARRYING:
            raise _refuse(path, f"its config holds a Python function ({module}.{class_name}), which runs code")
        if module and module != ALLOWED_PACKAGE and not module.startswith(f"{ALLOWED_PACKAGE}."):
            raise _refuse(path, f"its config names an object from module '{module}', which is not part of Keras")


# What a saved model claims as its date, and its archive members' timestamps: fixed, so the same
# weights give the same bytes (Keras writes the save time into metadata.json and the zip, which
# made every repro change dvc.lock and re-run the stages after train for nothing).
FIXED_DATE = "1980-01-01@00:00:00"
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _renumber_shared_objects(node: Any, numbers: dict[int, int]) -> Any:
    """The config with each `shared_object_id` (Keras writes id(), a memory address that changes
    every run) replaced by its order of first appearance: the same sharing, the same bytes."""
    if isinstance(node, dict):
        return {key: (numbers.setdefault(value, len(numbers) + 1) if key == "shared_object_id"
                      else _renumber_shared_objects(value, numbers)) for key, value in node.items()}
    if isinstance(node, list):
        return [_renumber_shared_objects(item, numbers) for item in node]
    return node


def normalise_archive(path: Path) -> None:
    """Rewrite a .keras archive in place with the save date, member timestamps and object ids fixed."""
    rewritten = path.with_name(path.name + ".normalised")
    with zipfile.ZipFile(path) as original, zipfile.ZipFile(rewritten, "w") as out:
        for info in original.infolist():
            data = original.read(info)
            if info.filename == "metadata.json":
                metadata = json.loads(data)
                metadata["date_saved"] = FIXED_DATE
                data = json.dumps(metadata).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared_objects(json.loads(data), {})).encode()
            member = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            member.compress_type, member.external_attr = info.compress_type, info.external_attr
            out.writestr(member, data)
    os.replace(rewritten, path)


def save_model_file(model: keras.Model, path: str | Path) -> None:
    """model.save whole or not at all, and the same bytes for the same weights: a temporary .keras
    beside the target, its dates fixed, renamed into place.

    A full disk once left a 300 KB half-written model at the final path, which evaluate then
    failed to load with a misleading "File not found".
    """
    target = Path(path)
    check_output(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.stem}.{os.getpid()}.partial.keras")
    try:
        model.save(temporary)
        normalise_archive(temporary)
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        temporary.with_name(temporary.name + ".normalised").unlink(missing_ok=True)
        raise write_error(target, exc) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        temporary.with_name(temporary.name + ".normalised").unlink(missing_ok=True)
        raise


def load_model_file(model_file: str | Path, *, trust: bool = False, compile: bool = True) -> keras.Model:
    """A Keras model from a file, refusing anything that could run code unless `trust` is set."""
    path = Path(model_file)
    if not path.exists():
        raise UsageError(f"model file '{model_file}' does not exist; pass the path of a saved .keras model")
    is_file = S_ISREG(path.stat().st_mode)
    if not trust:
        if path.suffix.lower() != ".keras" or not is_file:
            raise _refuse(path, "only .keras files are loaded: HDF5 (.h5) and SavedModel files can run code "
                                "stored in them when loaded")
        check_keras_archive(path)
    # Checked for every file that holds its weights in HDF5, trusted or not: a file made in good
    # faith can still declare more than a machine holds.
    stored = check_weights(path) if is_file else Inventory()
    try:
        with only_stored_variables(stored) if is_file else nullcontext():
            return keras.models.load_model(path, compile=compile, safe_mode=not trust)
    except Exception as exc:  # a broken or hostile file must read as that, not as a bug in trainwell
        if stored.refusal:  # Keras wraps what the check raised inside its own errors
            raise _refuse_sizes(path, stored.refusal) from None
        raise UsageError(f"'{model_file}' could not be loaded as a Keras model ({type(exc).__name__}: "
                         f"{str(exc)[:300]}); pass a model saved with model.save('model.keras')") from None


WEIGHTS_MEMBER = "model.weights.h5"  # where a .keras archive holds its weights (Keras' saving_lib)


def check_weights(path: Path) -> Inventory:
    """The arrays of a model file's weights (a .keras archive's HDF5 member, or an .h5 file), from
    their metadata; UsageError for one declaring more than it stores (model_weights.inventory)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                if WEIGHTS_MEMBER not in names:
                    if "model.weights.npz" in names:
                        raise DeclaredSizeError("its weights are stored as .npz, whose sizes trainwell does not check")
                    return Inventory()
                with archive.open(WEIGHTS_MEMBER) as member, h5py.File(member, "r") as weights:
                    return inventory(weights)
        with h5py.File(path, "r") as weights:
            return inventory(weights)
    except DeclaredSizeError as exc:
        raise _refuse_sizes(path, str(exc)) from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # h5py's errors for a file that is not HDF5
        raise _refuse_sizes(path, f"its weights are not a readable HDF5 file ({type(exc).__name__}: "
                                  f"{str(exc)[:200]})") from None
