"""The decoded training cache: uint8 image shards, label shards, source paths and a manifest; written and read here."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, cast

import numpy as np

from trainwell import storage
from trainwell.data.decode import DecodeError, max_file_bytes, prepare_image_and_side
from trainwell.data.splits import CLASSES_FILE, SPLITS, read_split_csv
from trainwell.errors import DataError
from trainwell.outputs import fresh_staging_dir, replace_generated_dir, write_json
from trainwell.progress import progress

CACHE_MANIFEST = "manifest.json"
PATHS_FILE = "paths.json"  # per split: the source path of each cached image, in cache order
# Cache order is a seeded shuffle of the split CSV (see shuffle_rows), never the CSV's own order:
# every consumer pairs a row's pixels with its label and path by position in the cache itself.
# 2: paths.json replaced paths.txt (one path a line broke on names holding a newline).
CACHE_FORMAT = 2


class ShardEntry(TypedDict):
    """One shard of a split: its two file names, its image count and the sha256 of its pixels then labels."""

    images: str
    labels: str
    count: int
    sha256: str


class SkippedFile(TypedDict):
    """A file the build could not decode (changed since the audit): its path and why."""

    path: str
    reason: str


class SourceSide(TypedDict):
    """The cached images' sources' longer sides, in pixels before resizing."""

    median: int
    p90: int
    max: int


class SplitEntry(TypedDict):
    """One split in the cache's manifest.json."""

    count: int
    per_class: dict[str, int]
    shards: list[ShardEntry]
    skipped: list[SkippedFile]
    source_side: SourceSide | None


class CacheManifest(TypedDict):
    """The decoded cache's manifest.json: its format, class order, image shape, shuffle seed and splits."""

    format: int
    classes: list[str]
    image_shape: list[int]  # [height, width, 3]
    shuffle_seed: int
    splits: dict[str, SplitEntry]


# -- writing ---------------------------------------------------------------------------------


def _decode_one(root: Path | str, path: str, size: int, max_pixels: int) -> tuple[np.ndarray, int] | str:
    """The resized image and its source's longer side, or the reason it could not be decoded (never
    raises for a bad file)."""
    try:
        data = storage.read_regular_file(storage.join(root, path), max_bytes=max_file_bytes(max_pixels))
        return prepare_image_and_side(data, suffix=os.path.splitext(path)[1], size=size, max_pixels=max_pixels)
    except storage.FileTooLarge as exc:
        return f"too_large: {exc}"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    except DecodeError as exc:
        return str(exc)


def shuffle_rows(rows: list[tuple[str, str]], *, seed: int, split: str) -> list[tuple[str, str]]:
    """rows in a seeded order: the same rows, seed and split name always give the same order.

    Split CSVs are sorted by path, so class folder by class folder; written to shards in that
    order, a shard much smaller than its split holds one or two classes, and a streamed batch
    (cut within a shard) too. Shuffling before sharding, as TFRecord pipelines do, mixes every
    shard. The split name joins the seed so train, val and test are not shuffled alike.
    """
    order = np.random.default_rng([seed, *split.encode()]).permutation(len(rows))
    return [rows[index] for index in order.tolist()]


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
) -> SplitEntry:
    """Write rows, in the order given, as shards out_dir/images-NNNNN.npy + labels-NNNNN.npy; return this
    split's manifest entry.

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
    shards: list[ShardEntry] = []
    skipped: list[SkippedFile] = []
    paths: list[str] = []
    sides: list[int] = []
    counts: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(rows), shard_size):
            chunk = rows[start : start + shard_size]
            results = pool.map(lambda row: _decode_one(root, row[0], image_size, max_pixels), chunk)
            images, labels = [], []
            for (path, label), result in zip(chunk, progress(results, total=len(chunk), description=f"build {name}")):
                if isinstance(result, str):
                    skipped.append(SkippedFile(path=path, reason=result))
                    continue
                images.append(result[0])
                sides.append(result[1])
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
            shards.append(ShardEntry(images=image_file, labels=label_file, count=len(images), sha256=digest.hexdigest()))
    # JSON, not one path a line: file names may hold newlines or any other character.
    write_json(storage.join(out_dir, PATHS_FILE), paths)
    return SplitEntry(
        count=sum(shard["count"] for shard in shards),
        per_class={label: counts.get(label, 0) for label in classes},
        shards=shards,
        skipped=skipped,
        source_side=source_side_summary(sides),
    )


def source_side_summary(sides: list[int]) -> SourceSide | None:
    """The cached images' sources' longer sides (pixels, before resizing): median, 90th percentile
    and largest; None for an empty split. Images upscaled to data.image_size hold no more detail
    than this, which is what label review sizes its fold models by."""
    if not sides:
        return None
    median, p90 = np.percentile(sides, [50, 90], method="higher")
    return SourceSide(median=int(median), p90=int(p90), max=int(max(sides)))


def source_side(cache_manifest: CacheManifest) -> int | None:
    """The 90th percentile of the sources' longer sides over every split (pixels), or None when the
    cache does not record it (built before it did) or holds no image."""
    splits = cache_manifest.get("splits")
    summaries = [split.get("source_side") for split in (splits.values() if isinstance(splits, dict) else [])
                 if isinstance(split, dict)]
    known = [summary["p90"] for summary in summaries if isinstance(summary, dict) and type(summary.get("p90")) is int
             and summary["p90"] > 0]
    return max(known) if known else None


def build_cache(
    *,
    data_dir: str,
    splits_dir: str,
    cache_dir: str,
    image_size: int,
    shard_size: int,
    workers: int,
    max_pixels: int,
    seed: int,
) -> CacheManifest:
    """Build every split's shards, its rows in a seeded shuffle (shuffle_rows), and write
    cache_dir/manifest.json; return the manifest."""
    classes_file = Path(splits_dir) / CLASSES_FILE
    try:
        classes = storage.read_json(classes_file)
    except FileNotFoundError:
        classes = []
    except (OSError, ValueError) as exc:
        raise DataError(f"'{classes_file}' cannot be read ({exc}); run `dvc repro split` again") from None
    if not classes:
        raise DataError(f"'{Path(splits_dir) / CLASSES_FILE}' lists no classes; run `dvc repro split` first")
    target = cache_dir
    if not storage.is_remote(cache_dir):
        # Built whole beside the final folder, then swapped in: a build killed at any moment
        # leaves the previous cache (or none) in place, and its leftovers are cleared next time.
        # Only a folder an earlier build made (its manifest is the marker) is ever replaced.
        target = str(fresh_staging_dir(cache_dir, marker=CACHE_MANIFEST))
    elif storage.exists(cache_dir) and not storage.exists(storage.join(cache_dir, CACHE_MANIFEST)):
        # An object-store cache is overwritten shard by shard (the manifest names the live ones),
        # so the same marker rule decides whether those objects may be written over.
        raise DataError(
            f"'{cache_dir}' holds objects that trainwell did not write (no {CACHE_MANIFEST}); refusing to write over "
            "them. Point paths.cache_dir in params.yaml at an empty prefix"
        )
    cache_manifest = CacheManifest(format=CACHE_FORMAT, classes=classes, image_shape=[image_size, image_size, 3],
                             shuffle_seed=seed, splits={})
    for name in SPLITS:
        rows = shuffle_rows(read_split_csv(Path(splits_dir) / f"{name}.csv"), seed=seed, split=name)
        cache_manifest["splits"][name] = build_split(
            root=data_dir if storage.is_remote(data_dir) else Path(data_dir),
            rows=rows,
            classes=classes,
            image_size=image_size,
            shard_size=shard_size,
            out_dir=storage.join(target, name),
            workers=workers,
            max_pixels=max_pixels,
        )
    write_json(storage.join(target, CACHE_MANIFEST), cache_manifest)
    if target != cache_dir:
        replace_generated_dir(Path(target), Path(cache_dir), marker=CACHE_MANIFEST)
    return cache_manifest


# -- reading ---------------------------------------------------------------------------------


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


def read_cache_manifest(cache_dir: str | Path) -> CacheManifest:
    """The cache's manifest.json; a missing one, or one of another cache format, is a DataError saying to rebuild."""
    path = storage.join(cache_dir, CACHE_MANIFEST)
    if not storage.exists(path):
        raise DataError(f"cache manifest '{path}' is missing; run `dvc repro build` first")
    cache_manifest = json.loads(storage.read_bytes(path))
    if not isinstance(cache_manifest, dict) or cache_manifest.get("format") != CACHE_FORMAT:
        raise DataError(f"the cache at '{cache_dir}' was built by another trainwell version (format "
                        f"{cache_manifest.get('format') if isinstance(cache_manifest, dict) else '?'}, this one reads "
                        f"{CACHE_FORMAT}); run `dvc repro build` (or `trainwell build`) again")
    return cast(CacheManifest, cache_manifest)  # build_cache's layout: this format is only ever written there


def load_split(*, cache_dir: str | Path, split: str) -> CachedSplit:
    """Load a split's shards into memory (the fast path for sets that fit the memory budget)."""
    sharded = open_split(cache_dir=cache_dir, split=split)
    return CachedSplit(images=sharded.load_images(), labels=sharded.labels, paths=sharded.paths,
                       classes=sharded.classes)


@dataclass
class ShardedSplit:
    """A split left on disk (or in an object store): shard files, counts, labels and paths.

    Only labels (4 bytes an image) and paths are read up front; pixels are read one shard
    at a time while training. It may also be a view: a selection of examples (select) or
    several splits end to end (combine_splits), whose shards are still read whole but of
    which only the selected rows are used.
    """

    folder: str
    image_files: list[str]
    label_files: list[str]
    counts: list[int]
    image_shape: tuple[int, int, int]
    labels: np.ndarray
    paths: list[str]
    classes: list[str]
    # For a view: each example's row in its shard file (example i is in the shard that
    # offsets/counts place it in). None: every row of every shard, in order.
    rows: np.ndarray | None = None
    _held: tuple[int, np.ndarray] | None = field(default=None, repr=False, compare=False)  # see image()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_bytes(self) -> int:
        """Bytes the decoded images would take in memory (what the memory budget is compared with)."""
        return int(sum(self.counts) * np.prod(self.image_shape))

    @property
    def offsets(self) -> np.ndarray:
        """Index of each shard's first example in the split."""
        return np.concatenate([[0], np.cumsum(self.counts)])[:-1].astype(np.int64)

    def shard_rows(self, shard: int) -> np.ndarray | slice:
        """The rows of shard file `shard` that this split uses, in its order."""
        if self.rows is None:
            return slice(None)
        start = int(self.offsets[shard])
        return self.rows[start : start + self.counts[shard]]

    def image(self, index: int) -> np.ndarray:
        """One image, read from its shard. The last shard read is kept, so reading images in
        index order reads each shard once."""
        shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
        if self._held is None or self._held[0] != shard:
            self._held = (shard, storage.load_npy(self.image_files[shard]))
        row = index - self.offsets[shard] if self.rows is None else self.rows[index]
        return self._held[1][row]

    def load_images(self) -> np.ndarray:
        """Every shard read into one preallocated array: peak memory is the split plus one shard,
        not twice the split as concatenating would take."""
        count = sum(self.counts)
        images = np.empty((count, *self.image_shape), dtype=np.uint8)
        start = 0
        for shard, path in enumerate(self.image_files):
            rows = storage.load_npy(path)[self.shard_rows(shard)]
            images[start : start + len(rows)] = rows
            start += len(rows)
        if start != count:
            raise DataError(f"the cache manifest promises {count} images in '{self.folder}' but its shards hold "
                            f"{start}; run `dvc repro build` again")
        return images

    def select(self, indices: np.ndarray) -> ShardedSplit:
        """A view of the examples at `indices` (increasing), in that order: nothing is read or copied
        but labels and paths; shards holding none of them are left out."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices[0] < 0 or indices[-1] >= len(self.labels) or np.any(np.diff(indices) <= 0)):
            raise ValueError(f"select takes increasing indices below {len(self.labels)}")
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        rows = indices - self.offsets[shard_of] if self.rows is None else self.rows[indices]
        kept = np.unique(shard_of)
        return ShardedSplit(
            folder=self.folder,
            image_files=[self.image_files[shard] for shard in kept],
            label_files=[self.label_files[shard] for shard in kept],
            counts=np.bincount(shard_of, minlength=len(self.counts))[kept].tolist(),
            image_shape=self.image_shape,
            labels=self.labels[indices],
            paths=[self.paths[index] for index in indices],
            classes=self.classes,
            rows=rows,
        )


def combine_splits(splits: list[ShardedSplit], *, folder: str) -> ShardedSplit:
    """Several splits of one cache end to end, as one view (examples keep their order)."""
    if len({tuple(split.classes) for split in splits}) > 1 or len({split.image_shape for split in splits}) > 1:
        raise DataError(f"cannot combine splits of different caches under '{folder}'; run `dvc repro build` again")
    return ShardedSplit(
        folder=folder,
        image_files=[path for split in splits for path in split.image_files],
        label_files=[path for split in splits for path in split.label_files],
        counts=[count for split in splits for count in split.counts],
        image_shape=splits[0].image_shape,
        labels=np.concatenate([split.labels for split in splits]),
        paths=[path for split in splits for path in split.paths],
        classes=splits[0].classes,
        # Whole splits end to end use every row of every shard in order: no row table needed.
        rows=None if all(split.rows is None for split in splits) else np.concatenate([
            np.arange(sum(split.counts)) - np.repeat(split.offsets, split.counts) if split.rows is None else split.rows
            for split in splits]).astype(np.int64),
    )


def open_split(*, cache_dir: str | Path, split: str) -> ShardedSplit:
    cache_manifest = read_cache_manifest(cache_dir)
    if split not in cache_manifest["splits"]:
        raise DataError(f"split '{split}' is not in the cache at '{cache_dir}'; have {sorted(cache_manifest['splits'])}")
    shards = cache_manifest["splits"][split]["shards"]
    folder = storage.join(cache_dir, split)
    labels = [storage.load_npy(storage.join(folder, shard["labels"])) for shard in shards]
    return ShardedSplit(
        folder=folder,
        image_files=[storage.join(folder, shard["images"]) for shard in shards],
        label_files=[storage.join(folder, shard["labels"]) for shard in shards],
        counts=[int(shard["count"]) for shard in shards],
        image_shape=cast(tuple[int, int, int], tuple(cache_manifest["image_shape"])),
        labels=np.concatenate(labels) if labels else np.zeros((0,), np.int32),
        paths=json.loads(storage.read_bytes(storage.join(folder, PATHS_FILE))),
        classes=cache_manifest["classes"],
    )
