"""Benchmark: training throughput of the story CNN with the divergence guard on vs off, in one run.

Usage: python benchmarks/guard_overhead.py [--images 3000] [--epochs 3] [--repeats 3]
Prints images/s for both and the overhead ratio; the bar is an overhead under 5%.
Runs are interleaved (off, on, off, on, ...) and the median is reported, so drift in machine
load affects both sides alike.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from model.network import build_model  # noqa: E402
from pipeline.dataset import make_train_dataset, steps_per_epoch  # noqa: E402
from pipeline.guard import DivergenceGuard  # noqa: E402
from pipeline.params import GuardParams  # noqa: E402


def one_run(*, images: np.ndarray, labels: np.ndarray, epochs: int, batch_size: int, guard: bool) -> float:
    keras.utils.set_random_seed(0)
    model = build_model(num_classes=5, image_size=images.shape[1], conv_filters=[16, 16, 32], kernel_size=2,
                        dense_units=128)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", metrics=["accuracy"])
    steps = steps_per_epoch(count=len(images), batch_size=batch_size)
    # One warm-up epoch (graph tracing) outside the timed part.
    data = make_train_dataset(images=images, labels=labels, num_classes=5, batch_size=batch_size, seed=0,
                              first_epoch=0, epochs=epochs + 1)
    callbacks = []
    if guard:
        defaults = GuardParams()
        callbacks.append(DivergenceGuard(
            check_every=defaults.check_every, spike_factor=defaults.spike_factor, spike_window=defaults.spike_window,
            lr_factor=defaults.lr_factor, max_rollbacks=defaults.max_rollbacks, chance_loss=math.log(5),
            batch_size=batch_size, train_count=len(images)))
    iterator = iter(data)
    model.fit(iterator, epochs=1, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
    start = time.perf_counter()
    model.fit(iterator, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
    return len(images) * epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 75, 75, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, size=args.images).astype(np.int32)
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for guard in (False, True):
            results[guard].append(one_run(images=images, labels=labels, epochs=args.epochs,
                                          batch_size=args.batch_size, guard=guard))
    off, on = statistics.median(results[False]), statistics.median(results[True])
    overhead = 1.0 - on / off
    print(f"guard off: {off:10.0f} images/s  (runs: {', '.join(f'{v:.0f}' for v in results[False])})")
    print(f"guard on:  {on:10.0f} images/s  (runs: {', '.join(f'{v:.0f}' for v in results[True])})")
    print(f"ratio on/off: {on / off:.3f}  overhead: {overhead * 100:.1f}%  (bar: under 5%) "
          f"{'PASS' if overhead < 0.05 else 'FAIL'}")


if __name__ == "__main__":
    main()
