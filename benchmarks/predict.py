"""Benchmark: images/s of `trainwell predict` beside a per-image `model.predict` loop on the same files, in one run.

Usage: python benchmarks/predict.py [--images 400] [--model models/model.keras] [--repeats 3]

Both classify the same freshly generated folder of 75x75 JPEGs with the same model:
- trainwell: the predict command's own code in this process: list the folder, check every
  file as the audit does (child processes), then prepare_image inside a batched, prefetching
  tf.data pipeline and one model.predict call (also shown without the checks);
- baseline: what a user writes without it: for each file, Pillow decode, convert, resize, and
  model.predict on a batch of one.
Every run must give each image the same top-1 class as the baseline before it counts. The median
of `repeats` runs is reported. Bar: trainwell (checks included) >= 10x the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from PIL import Image

from trainwell.audit.target_checks import check_targets
from trainwell.data.demo import SHAPES, draw_shape, encode_jpeg
from trainwell.data.targets import collect_targets
from trainwell.params import Params


def make_folder(root: Path, images: int, size: int) -> None:
    for index in range(images):
        label = SHAPES[index % len(SHAPES)]
        path = root / label / f"{index:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(draw_shape(shape=label, size=size, rng=np.random.default_rng([9, index]))))


def load_or_build_model(path: str | None, size: int):
    from trainwell.training.model_files import load_model_file
    from trainwell.training.network import model_for

    if path and Path(path).is_file():
        return load_model_file(path, compile=False)
    return model_for(Params().train, num_classes=len(SHAPES), image_size=size)


def trainwell_run(folder: Path, model, params: Params, *, checks: bool) -> np.ndarray:
    from trainwell.training.predict import predict_files  # starts TensorFlow: not at the top, for `--help`

    targets = collect_targets([str(folder)], manifest=None, extensions=params.data.extensions)
    locations = targets.locations
    if checks:
        accepted, refused, _, _ = check_targets(targets, policy=params.audit)
        assert not refused, refused
        locations = [locations[position] for position in accepted]
    probabilities, failures = predict_files(model=model, locations=locations, max_pixels=params.audit.max_pixels,
                                            batch_size=params.predict.batch_size)
    assert not failures, failures
    return probabilities.argmax(axis=1)


def baseline_run(folder: Path, model, size: int) -> np.ndarray:
    predictions = []
    for path in sorted(folder.rglob("*.jpg")):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((size, size)), dtype=np.uint8)
        predictions.append(int(model.predict(pixels[np.newaxis], verbose=0).argmax()))
    return np.asarray(predictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--images", type=int, default=400, help="JPEG files to classify (default: %(default)s)")
    parser.add_argument("--model", default="models/model.keras",
                        help="a .keras model at 75x75 (default: %(default)s; an untrained one when missing)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender (default: %(default)s)")
    args = parser.parse_args()
    params = Params()
    size = params.data.image_size
    model = load_or_build_model(args.model, size)
    with tempfile.TemporaryDirectory(prefix="trainwell-predict-bench-") as scratch:
        folder = Path(scratch) / "images"
        make_folder(folder, args.images, size)
        expected = baseline_run(folder, model, size)  # warm-up, and the answer every run must give
        trainwell_run(folder, model, params, checks=True)
        timings: dict[str, list[float]] = {"trainwell": [], "trainwell (no checks)": [], "per-image model.predict": []}
        for _ in range(args.repeats):
            for name, call in (("trainwell", lambda: trainwell_run(folder, model, params, checks=True)),
                               ("trainwell (no checks)", lambda: trainwell_run(folder, model, params, checks=False)),
                               ("per-image model.predict", lambda: baseline_run(folder, model, size))):
                start = time.perf_counter()
                answer = call()
                timings[name].append(time.perf_counter() - start)
                if not np.array_equal(answer, expected):
                    raise SystemExit(f"{name} disagreed with the baseline on {int((answer != expected).sum())} images")
    rates = {name: args.images / statistics.median(values) for name, values in timings.items()}
    baseline = rates["per-image model.predict"]
    print(f"{args.images} JPEGs at {size}x{size}, {os.cpu_count()} CPU cores, median of {args.repeats} runs")
    for name, rate in rates.items():
        print(f"  {name:<26} {rate:10.0f} images/s   {rate / baseline:6.1f}x the per-image loop")
    ratio = rates["trainwell"] / baseline
    print(f"bar: trainwell (checks included) >= 10x the per-image loop: {'met' if ratio >= 10 else 'MISSED'} ({ratio:.1f}x)")


if __name__ == "__main__":
    main()
