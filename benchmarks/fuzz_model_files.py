"""Fuzz the model-file loader: generated .keras archives that lie about their sizes, and byte mutations of their members, for as long as you like.

Usage: python benchmarks/fuzz_model_files.py [--minutes 2] [--out fuzz-failures]

Each round builds lies from a small saved model (tests/model_fuzzing.py: a config asking a layer
for a huge size, HDF5 arrays declaring more than they store, links to other files) plus seeded
byte mutations of its config.json and weights file (tests/fuzzing.mutate), and loads each with
trainwell.training.model_files.load_model_file. A load must succeed or raise UsageError (exit 2);
anything else, or a process that grows by more than 256 MiB, is a failure, saved under --out.
Prints loads/s beside keras.models.load_model on the good file in the same run (the baseline:
what a user would otherwise call, with no checks).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*

import numpy as np

from tests import fuzzing, model_fuzzing
from trainwell.errors import UsageError

GROWTH_LIMIT_MIB = 256


def good_model(folder: Path) -> Path:
    import keras  # here, not at the top: it starts TensorFlow, and `--help` should not wait for it

    inputs = keras.Input((12, 12, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.Dense(6)(keras.layers.Flatten()(x)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(np.zeros((4, 12, 12, 3)), np.eye(5)[[0, 1, 2, 3]], verbose=0)
    path = folder / "good.keras"
    model.save(path)
    return path


def mutations(source: Path, folder: Path, seed: int, count: int) -> dict[str, Path]:
    rng = random.Random(seed)
    original = model_fuzzing.members(source)
    made = {}
    for index in range(count):
        member = rng.choice(["config.json", model_fuzzing.WEIGHTS])
        changed = {**original, member: fuzzing.mutate(original[member], rng)}
        made[f"mutate-{member}-{index}"] = model_fuzzing.write_archive(folder / f"mutated-{index}.keras", changed)
    return made


def rate(load, path: Path, seconds: float = 5.0) -> float:
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        load(path)
        count += 1
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--out", default="fuzz-failures", help="where failing files are saved (default: %(default)s)")
    args = parser.parse_args()
    import keras  # after the arguments: keras and the loader start TensorFlow

    from trainwell.training.model_files import load_model_file

    with tempfile.TemporaryDirectory(prefix="trainwell-model-fuzz-") as scratch:
        folder = Path(scratch)
        source = good_model(folder)
        checked, bare = rate(load_model_file, source), rate(keras.models.load_model, source)
        print(f"loading the good file: {checked:.1f} loads/s checked, {bare:.1f} loads/s with keras.models.load_model "
              f"(ratio {checked / bare:.2f})")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        deadline, seed, tried, refused, failures = time.monotonic() + 60 * args.minutes, 1, 0, 0, 0
        while time.monotonic() < deadline:
            round_folder = folder / f"round{seed}"
            round_folder.mkdir()
            files = {**model_fuzzing.config_lies(source, round_folder, 20, seed=seed),
                     **model_fuzzing.hdf5_lies(source, round_folder), **mutations(source, round_folder, seed, 40)}
            for name, path in files.items():
                tried += 1
                try:
                    load_model_file(path)
                except UsageError:
                    refused += 1
                    continue
                except Exception as exc:  # anything but a refusal is a failure: keep the file
                    failures += 1
                    target = Path(args.out) / f"seed{seed}-{path.name}"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(path.read_bytes())
                    print(f"FAILURE seed {seed} {name}: {type(exc).__name__}: {str(exc)[:200]} (saved to {target})")
            growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
            if growth > GROWTH_LIMIT_MIB:
                failures += 1
                print(f"FAILURE seed {seed}: the process grew by {growth:.0f} MiB")
            seed += 1
    print(f"loaded {tried} generated files in {seed - 1} rounds: {refused} refused, {tried - refused - failures} loaded, "
          f"{failures} failure(s); peak growth {growth:.0f} MiB")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
