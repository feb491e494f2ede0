"""Planted faults for measuring the label review: flipped labels and out-of-class images in a demo-set folder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trainwell.data.demo import encode_jpeg

# Images that belong to no demo class, each unlike the shapes in its own way.
OUTLIER_KINDS = ("noise", "solid", "stripes", "star")


def outlier_image(kind: str, *, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image of a kind no demo class holds."""
    if kind == "noise":  # every pixel random
        return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    if kind == "solid":  # one colour, no shape
        return np.broadcast_to(rng.integers(0, 256, size=3, dtype=np.uint8), (size, size, 3)).copy()
    if kind == "stripes":  # a texture: stripes of random period and direction in two colours
        period = rng.uniform(4, 12)
        angle = rng.uniform(0, math.pi)
        y, x = np.mgrid[:size, :size]
        phase = (x * math.cos(angle) + y * math.sin(angle)) / period
        colours = rng.integers(0, 256, size=(2, 3))
        return colours[(np.floor(phase) % 2).astype(int)].astype(np.uint8)
    if kind == "star":  # another shape family: a thin five-pointed star outline on a plain background
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 110, size=3)))
        center, radius, turn = size / 2, size * rng.uniform(0.3, 0.45), rng.uniform(0, 2 * math.pi)
        points = [(center + (radius if k % 2 == 0 else radius * 0.4) * math.cos(turn + math.pi * k / 5),
                   center + (radius if k % 2 == 0 else radius * 0.4) * math.sin(turn + math.pi * k / 5))
                  for k in range(10)]
        ImageDraw.Draw(image).polygon(points, outline=tuple(int(v) for v in rng.integers(150, 256, size=3)), width=2)
        return np.asarray(image)
    raise ValueError(f"unknown outlier kind '{kind}'; choose from {', '.join(OUTLIER_KINDS)}")


def plant_faults(root: Path, *, flip_fraction: float, outliers: int, size: int, seed: int = 123
                 ) -> tuple[dict[str, str], dict[str, str]]:
    """Move a seeded share of root/<class>/*.jpg into a wrong class folder and write `outliers`
    out-of-class images (kinds in turn) into random class folders.

    Returns (flipped: relative path -> true class, planted: relative path -> kind). Files are
    planted before the split, so faults land in every split, test included.
    """
    classes = sorted(path.name for path in root.iterdir() if path.is_dir())
    rng = np.random.default_rng(seed)
    flipped = flip_labels(root, fraction=flip_fraction, rng=rng, pattern="*.jpg")
    planted = {}
    for number in range(outliers):
        kind = OUTLIER_KINDS[number % len(OUTLIER_KINDS)]
        label = str(rng.choice(classes))
        name = f"planted_{kind}_{number:04d}.jpg"
        (root / label / name).write_bytes(encode_jpeg(outlier_image(kind, size=size, rng=rng)))
        planted[f"{label}/{name}"] = kind
    return flipped, planted


def flip_labels(root: Path, *, fraction: float, rng: np.random.Generator, pattern: str = "*") -> dict[str, str]:
    """Move a seeded share of the files root/<class>/<pattern> into a wrong class folder, renamed
    flipped_<number><suffix> (file names may repeat across classes); returns relative path -> true class."""
    classes = sorted(path.name for path in root.iterdir() if path.is_dir())
    files = sorted(path for path in root.glob(f"*/{pattern}") if path.is_file())
    flipped = {}
    for index in rng.choice(len(files), size=round(fraction * len(files)), replace=False):
        source = files[index]
        wrong = str(rng.choice([label for label in classes if label != source.parent.name]))
        target = root / wrong / f"flipped_{len(flipped):05d}{source.suffix}"
        source.rename(target)
        flipped[f"{wrong}/{target.name}"] = source.parent.name
    return flipped


def precision_recall(found: set[str], truth: set[str], *, ignore: set[str] = frozenset()) -> tuple[float, float]:
    """Precision and recall of `found` against `truth`; files in `ignore` count neither way."""
    found, truth = found - ignore, truth - ignore
    hits = len(found & truth)
    return (hits / len(found) if found else math.nan), (hits / len(truth) if truth else math.nan)
