"""Benchmark: training throughput of the story CNN with the divergence guard on vs off, in one run.

Usage: python benchmarks/guard_overhead.py [--images 3000] [--epochs 3] [--repeats 3]
Prints images/s for both and the overhead ratio; the bar is an overhead under 5%.
Runs are interleaved (off, on, off, on, ...) so drift in machine load affects both sides
alike. On a shared 2-core machine single runs vary by +-10%, far more than the guard costs,
so the verdict uses each side's best run (the least disturbed, as timeit does); medians are
printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from trainwell.params import GuardParams


def one_run(*, images: np.ndarray, labels: np.ndarray, epochs: int, batch_size: int, guard: bool) -> float:
    # Imported here, not at the top: they start TensorFlow, and `--help` should not wait for it.
    import keras

    from trainwell.training.guard import DivergenceGuard
    from trainwell.training.inputs import BatchSpec, make_train_dataset, steps_per_epoch
    from trainwell.training.network import build_model

    keras.utils.set_random_seed(0)
    model = build_model(num_classes=5, image_size=images.shape[1], conv_filters=[16, 16, 32], kernel_size=2,
                        dense_units=128)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", metrics=["accuracy"])
    steps = steps_per_epoch(count=len(images), batch_size=batch_size)
    # One extra warm-up epoch (graph tracing) is run outside the timed part.
    data = make_train_dataset(images=images, labels=labels, spec=BatchSpec(
        num_classes=5, batch_size=batch_size, seed=0, first_epoch=0, epochs=epochs + 1))
    callbacks = []
    if guard:
        callbacks.append(DivergenceGuard(num_classes=5, policy=GuardParams()))
    clock = epoch_clock()
    model.fit(data, epochs=epochs + 1, steps_per_epoch=steps, callbacks=[*callbacks, clock], verbose=0)
    return len(images) * epochs / (clock.end - clock.start)


def epoch_clock():
    """A callback timing everything after the first (tracing) epoch (defined here: keras starts TensorFlow)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 1:
                self.start = time.perf_counter()

        def on_train_end(self, logs: dict | None = None) -> None:
            self.end = time.perf_counter()

    return EpochClock()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 75, 75, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, size=args.images).astype(np.int32)
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for guard in (False, True):
            results[guard].append(one_run(images=images, labels=labels, epochs=args.epochs,
                                          batch_size=args.batch_size, guard=guard))
    for guard, label in ((False, "guard off"), (True, "guard on ")):
        runs = results[guard]
        print(f"{label}: best {max(runs):7.0f} images/s, median {statistics.median(runs):7.0f} "
              f"(runs: {', '.join(f'{v:.0f}' for v in runs)})")
    best_ratio = max(results[True]) / max(results[False])
    median_ratio = statistics.median(results[True]) / statistics.median(results[False])
    overhead = 1.0 - best_ratio
    print(f"ratio on/off: best {best_ratio:.3f}, median {median_ratio:.3f}; overhead {overhead * 100:.1f}% "
          f"(bar: under 5%) {'PASS' if overhead < 0.05 else 'FAIL'}")


if __name__ == "__main__":
    main()
