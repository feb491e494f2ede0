"""Stage `build`: decode and resize every split image once into uint8 shards plus a manifest."""

from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline import storage
from pipeline.decode import DecodeError, decode_image, resize_image
from pipeline.errors import DataError
from pipeline.files import read_lines
from pipeline.outputs import clear_generated_dir, write_json
from pipeline.params import load_params
from pipeline.progress import progress
from pipeline.split import CLASSES_FILE, SPLITS, read_split_csv

MANIFEST = "manifest.json"
CACHE_FORMAT = 1


def _decode_one(root: Path | str, path: str, size: int, max_pixels: int) -> np.ndarray | str:
    """The resized image, or the reason it could not be decoded (never raises for a bad file)."""
    try:
        decoded = decode_image(storage.read_bytes(storage.join(root, path)), suffix=os.path.splitext(path)[1],
                               max_pixels=max_pixels)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    except DecodeError as exc:
        return str(exc)
    return resize_image(decoded.image, size=size)


def build_split(
    *,
    root: Path | str,
    rows: list[tuple[str, str]],
    classes: list[str],
    image_size: int,
    shard_size: int,
    out_dir: Path | str,
    workers: int,
    max_pixels: int,
) -> dict:
    """Write rows as shards out_dir/images-NNNNN.npy + labels-NNNNN.npy; return this split's manifest entry.

    A file that fails to decode here (changed since the audit) is skipped and named in the
    manifest's `skipped` list, never cached as a grey or black image.
    """
    index = {label: position for position, label in enumerate(classes)}
    unknown = sorted({label for _, label in rows if label not in index})
    if unknown:
        raise DataError(f"labels {unknown} are not in the class list {classes}; re-run `dvc repro split`")
    if not storage.is_remote(out_dir):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    name = str(out_dir).rstrip("/").rsplit("/", 1)[-1]
    shards, skipped, paths = [], [], []
    counts: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(rows), shard_size):
            chunk = rows[start : start + shard_size]
            results = pool.map(lambda row: _decode_one(root, row[0], image_size, max_pixels), chunk)
            images, labels = [], []
            for (path, label), result in zip(chunk, progress(results, total=len(chunk), description=f"build {name}")):
                if isinstance(result, str):
                    skipped.append({"path": path, "reason": result})
                    continue
                images.append(result)
                labels.append(index[label])
                paths.append(path)
                counts[label] += 1
            if not images:
                continue
            number = len(shards)
            image_array = np.stack(images).astype(np.uint8, copy=False)
            label_array = np.asarray(labels, dtype=np.int32)
            image_file, label_file = f"images-{number:05d}.npy", f"labels-{number:05d}.npy"
            storage.save_npy(storage.join(out_dir, image_file), image_array)
            storage.save_npy(storage.join(out_dir, label_file), label_array)
            digest = hashlib.sha256(image_array.tobytes())
            digest.update(label_array.tobytes())
            shards.append({"images": image_file, "labels": label_file, "count": len(images), "sha256": digest.hexdigest()})
    storage.write_bytes(storage.join(out_dir, "paths.txt"), "".join(f"{path}\n" for path in paths).encode())
    return {
        "count": sum(shard["count"] for shard in shards),
        "per_class": {label: counts.get(label, 0) for label in classes},
        "shards": shards,
        "skipped": skipped,
    }


def build_cache(
    *, data_dir: str, splits_dir: str, cache_dir: str, image_size: int, shard_size: int, workers: int, max_pixels: int
) -> dict:
    """Build every split's shards and write cache_dir/manifest.json; return the manifest."""
    classes = read_lines(Path(splits_dir) / CLASSES_FILE)
    if not classes:
        raise DataError(f"'{Path(splits_dir) / CLASSES_FILE}' lists no classes; run `dvc repro split` first")
    if not storage.is_remote(cache_dir):
        # Rebuilt whole, but only when an earlier build made it (its manifest is the marker).
        clear_generated_dir(Path(cache_dir), marker=MANIFEST)
    elif storage.exists(cache_dir) and not storage.exists(storage.join(cache_dir, MANIFEST)):
        # An object-store cache is overwritten shard by shard (the manifest names the live ones),
        # so the same marker rule decides whether those objects may be written over.
        raise DataError(
            f"'{cache_dir}' holds objects that trainwell did not write (no {MANIFEST}); refusing to write over "
            "them. Point paths.cache_dir in params.yaml at an empty prefix"
        )
    manifest = {"format": CACHE_FORMAT, "classes": classes, "image_shape": [image_size, image_size, 3], "splits": {}}
    for name in SPLITS:
        rows = read_split_csv(Path(splits_dir) / f"{name}.csv")
        manifest["splits"][name] = build_split(
            root=data_dir if storage.is_remote(data_dir) else Path(data_dir),
            rows=rows,
            classes=classes,
            image_size=image_size,
            shard_size=shard_size,
            out_dir=storage.join(cache_dir, name),
            workers=workers,
            max_pixels=max_pixels,
        )
    write_json(storage.join(cache_dir, MANIFEST), manifest)
    return manifest


def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    manifest = build_cache(
        data_dir=params.data.dir,
        splits_dir=params.paths.splits_dir,
        cache_dir=params.paths.cache_dir,
        image_size=params.data.image_size,
        shard_size=params.build.shard_size,
        workers=params.build.workers or os.cpu_count() or 1,
        max_pixels=params.audit.max_pixels,
    )
    for entry in manifest["splits"].values():
        for skipped in entry["skipped"]:
            print(f"build: WARNING skipped {skipped['path']}: {skipped['reason']}", file=sys.stderr)
    sizes = ", ".join(f"{name} {entry['count']}" for name, entry in manifest["splits"].items())
    print(f"build: cached {sizes} images at {params.data.image_size}x{params.data.image_size} in {params.paths.cache_dir}")
    return 0
