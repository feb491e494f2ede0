"""What a dataset folder holds, from its listing and file headers: classes and counts, sizes, channels, formats."""

from __future__ import annotations

import io
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainwell import storage
from trainwell.console import shown
from trainwell.data.decode import max_file_bytes
from trainwell.data.listing import list_dataset

MAX_HEADERS = 2000  # files whose header is read, spread evenly over the listing (about 0.1 ms each)
SMALLEST_SIZE = 16  # pixels: the small CNN's three pooling blocks need at least this (and audit.min_side's default)
LARGEST_DEFAULT_SIZE = 75  # pixels: the story's input side, init's largest choice; larger images are shrunk to it
# Pillow modes of one channel (grey, with or without alpha, or 16- and 32-bit grey).
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P;L"}


@dataclass
class Survey:
    counts: dict[str, int]
    read: int = 0  # headers read
    unreadable: int = 0  # headers Pillow could not read (the audit names them)
    formats: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> files
    grey: int = 0

    @property
    def median_side(self) -> int | None:
        sides = [min(size) for size, count in self.sizes.items() for _ in range(count)]
        return int(statistics.median(sides)) if sides else None


def survey_folder(root: str | Path, *, extensions: list[str], max_pixels: int, max_headers: int = MAX_HEADERS) -> Survey:
    """Classes and counts from the listing; formats, sizes and channels from up to max_headers headers."""
    from PIL import Image

    listing = list_dataset(root, classes=None, extensions=extensions)
    counts = Counter(label for _, label in listing.files)
    result = Survey(counts={name: counts.get(name, 0) for name in listing.classes})
    if not listing.files:
        return result
    picks = np.unique(np.linspace(0, len(listing.files) - 1, min(max_headers, len(listing.files))).astype(np.int64))
    for index in picks:
        relative = listing.files[int(index)][0]
        try:
            data = storage.read_regular_file(Path(root) / relative, max_bytes=max_file_bytes(max_pixels))
            with Image.open(io.BytesIO(data)) as image:  # the header only: nothing is decoded
                result.formats[(image.format or "?").lower()] += 1
                result.sizes[image.size] += 1
                result.grey += image.mode in GREY_MODES
            result.read += 1
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
            result.unreadable += 1
    return result


def choose_image_size(survey: Survey) -> tuple[int, str]:
    """data.image_size for this data, and why: its native size up to LARGEST_DEFAULT_SIZE, never below the CNN's minimum."""
    side = survey.median_side
    if side is None:
        return LARGEST_DEFAULT_SIZE, "the largest size init chooses (no image header could be read)"
    if side < SMALLEST_SIZE:
        return SMALLEST_SIZE, f"the small CNN's minimum (the images' median shorter side is {side} px: enlarged)"
    if side <= LARGEST_DEFAULT_SIZE:
        return side, f"the data's native size (median shorter side {side} px): no resampling, nothing invented"
    return LARGEST_DEFAULT_SIZE, (f"the largest size init chooses: the images' median shorter side is {side} px, so they are shrunk; "
                                  "raise data.image_size for finer detail at more compute")


def describe(survey: Survey) -> list[str]:
    """Lines for a person: classes with counts, sizes, channels, formats."""
    classes = ", ".join(f"{shown(name)} {count}" for name, count in survey.counts.items())
    lines = [f"{sum(survey.counts.values())} files in {len(survey.counts)} classes: {classes}"]
    if survey.read:
        common = ", ".join(f"{width}x{height} ({count})" for (width, height), count in survey.sizes.most_common(3))
        others = len(survey.sizes) - min(3, len(survey.sizes))
        lines.append(f"sizes (of {survey.read} headers read): {common}{f' and {others} other sizes' if others else ''}")
        lines.append(f"channels: {survey.grey} grayscale, {survey.read - survey.grey} colour; formats: "
                     + ", ".join(f"{name} {count}" for name, count in survey.formats.most_common()))
    if survey.unreadable:
        lines.append(f"{survey.unreadable} headers could not be read; `trainwell audit` names each file and why")
    return lines
