"""Benchmark and fuzz the served model: bombs against the exported signature with and without its limits, throughput on ordinary files, then seeded fuzzing.

Usage: python benchmarks/served.py [--images 2000] [--minutes 0] [--out fuzz-failures]

Two SavedModels of the same untrained network (75x75, the demo's size):
- guarded: what `trainwell export` writes, with the default limits (audit.max_pixels 40,000,000,
  export.max_image_bytes 32 MiB, 64 JPEG scans, a GIF's first image only);
- baseline: the same decoder with no limits, as the export was before them (and as a SavedModel
  calling tf.io.decode_image is).
1. Bombs from issue 23, each sent alone in a fresh process: seconds and peak memory above the
   process's own after one warm-up request, and what came back.
2. Throughput on ordinary 75x75 JPEGs in requests of 64: images/s, guarded beside baseline
   (median of 5 passes, the two interleaved).
3. With --minutes N: rounds of mutated files (tests/fuzzing.py) and generated bombs sent to the
   guarded model; each must come back as probabilities (finite, summing to 1) or as
   InvalidArgumentError. Anything else is saved under --out with the round's seed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fuzzing

import numpy as np

from tests import faults, fuzzing

SIZE = 75
REQUEST = 64
ONE_BOMB = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
import tensorflow as tf
from tests import faults
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
serve(image_bytes=tf.constant([faults.jpeg_bytes(0)]))
data = open(sys.argv[2], "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    serve(image_bytes=tf.constant([data]))["probabilities"].numpy()
    outcome = "probabilities"
except tf.errors.InvalidArgumentError as error:
    outcome = "refused: " + error.message.split("image 0 of the request: ")[-1].split("]")[0][:70]
print(json.dumps({"seconds": time.perf_counter() - started, "outcome": outcome,
                  "mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


def write_models(folder: Path) -> tuple[Path, Path]:
    import tensorflow as tf

    from trainwell.params import Params
    from trainwell.training.export import decode_for_serving, write_saved_model
    from trainwell.training.network import model_for
    from trainwell.training.served_limits import served_limits

    model = model_for(Params().train, num_classes=5, image_size=SIZE)
    guarded = folder / "guarded"
    write_saved_model(model=model, classes=list("abcde"), path=guarded, limits=served_limits(Params()))

    class Baseline(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            images = tf.map_fn(lambda data: decode_for_serving(data, size=SIZE), image_bytes,
                               fn_output_signature=tf.TensorSpec([SIZE, SIZE, 3], tf.uint8))
            return {"probabilities": tf.cast(model(images, training=False), tf.float32)}

    baseline_module = Baseline()
    baseline_module.model = model
    baseline = folder / "baseline"
    tf.saved_model.save(baseline_module, str(baseline), signatures={"serving_default": baseline_module.serve})
    return guarded, baseline


def issue_bombs() -> dict[str, bytes]:
    """The files issue 23 measured, rebuilt by the test generators."""
    return {
        "PNG 20000x20000 (zeros)": fuzzing.png_zeros(20000, 20000),
        "JPEG 2000x2000, 5,000 scans": fuzzing.jpeg_scans(5000, side=2000),
        "GIF 1000x1000, 100 frames": fuzzing.gif((1000, 1000), [(1000, 1000, fuzzing.lzw_constant(10**6, colour=i % 2))
                                                                for i in range(100)]),
        "GIF 8x8, then 3 frames of 16000x16000": fuzzing.gif((8, 8), [(8, 8, fuzzing.lzw_constant(64))] + [
            (16000, 16000, fuzzing.lzw_constant(16000 * 16000, colour=1))] * 3),
    }


def bombs_table(guarded: Path, baseline: Path, folder: Path) -> None:
    print("bomb | bytes | baseline: seconds, MiB, outcome | guarded: seconds, MiB, outcome")
    for name, data in issue_bombs().items():
        path = folder / "bomb"
        path.write_bytes(data)
        cells = []
        for model in (baseline, guarded):
            result = subprocess.run([sys.executable, "-c", ONE_BOMB, str(model), str(path), str(Path(__file__).parents[1])],
                                    capture_output=True, text=True, timeout=900)
            measured = json.loads(result.stdout) if result.returncode == 0 else {
                "seconds": float("nan"), "mib": float("nan"), "outcome": f"exit {result.returncode}"}
            cells.append(f"{measured['seconds']:.2f} s, {measured['mib']:.0f} MiB, {measured['outcome']}")
        print(f"{name} | {len(data):,} | {cells[0]} | {cells[1]}")


def throughput(guarded: Path, baseline: Path, images: int) -> None:
    import tensorflow as tf

    from trainwell.data.demo import SHAPES, draw_shape, encode_jpeg

    blobs = [encode_jpeg(draw_shape(shape=SHAPES[index % 5], size=SIZE, rng=np.random.default_rng([9, index])))
             for index in range(images)]
    serves = {name: tf.saved_model.load(str(path)).signatures["serving_default"]
              for name, path in (("baseline", baseline), ("guarded", guarded))}
    runs: dict[str, list[float]] = {name: [] for name in serves}
    for repeat in range(6):  # interleaved, so a busy spell on a shared machine slows both alike
        for name, serve in serves.items():
            started = time.perf_counter()
            for start in range(0, images, REQUEST):
                serve(image_bytes=tf.constant(blobs[start : start + REQUEST]))["probabilities"].numpy()
            if repeat:  # the first pass builds and warms the graphs
                runs[name].append(images / (time.perf_counter() - started))
    rates = {name: statistics.median(values) for name, values in runs.items()}
    print(f"throughput on {images} 75x75 JPEGs in requests of {REQUEST}: guarded {rates['guarded']:.0f} images/s, "
          f"baseline {rates['baseline']:.0f} images/s (ratio {rates['guarded'] / rates['baseline']:.2f})")


def fuzz(guarded: Path, minutes: float, out: Path) -> int:
    import tensorflow as tf

    from trainwell.params import Params

    serve = tf.saved_model.load(str(guarded)).signatures["serving_default"]
    good = faults.jpeg_bytes(0)
    limits = Params().audit.max_pixels, Params().export.max_image_bytes
    deadline, seed, sent, refused, failures = time.monotonic() + 60 * minutes, 1, 0, 0, 0
    started = time.perf_counter()
    while time.monotonic() < deadline:
        files = {name: data for name, data in fuzzing.corpus(500, seed=seed).items()
                 if name.rsplit(".", 1)[1] in ("jpg", "png", "gif", "bmp")}
        files |= {f"bomb/{name}": data for name, (data, _) in fuzzing.served_bombs(*limits, seed=seed).items()}
        for name, data in files.items():
            sent += 1
            try:
                probabilities = serve(image_bytes=tf.constant([good, data]))["probabilities"].numpy()
                if not (np.isfinite(probabilities).all() and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)):
                    raise ValueError(f"probabilities that are not a distribution: {probabilities}")
            except tf.errors.InvalidArgumentError:
                refused += 1
            except Exception as exc:  # anything but a refusal is a failure: keep the file to reproduce it
                failures += 1
                target = out / f"seed{seed}" / name.replace("/", "_")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                print(f"FAILURE seed {seed} {name}: {type(exc).__name__}: {str(exc)[:200]} (saved to {target})")
        seed += 1
    elapsed = time.perf_counter() - started
    print(f"fuzzed the guarded model with {sent} requests in {seed - 1} rounds ({sent / elapsed:.0f} requests/s): "
          f"{refused} refused, {sent - refused - failures} served, {failures} failure(s)")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="ordinary JPEGs for throughput (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=0.0, help="minutes of fuzzing after (default: %(default)s)")
    parser.add_argument("--out", default="fuzz-failures", help="where failing files are saved (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainwell-served-") as folder:
        guarded, baseline = write_models(Path(folder))
        bombs_table(guarded, baseline, Path(folder))
        throughput(guarded, baseline, args.images)
        return fuzz(guarded, args.minutes, Path(args.out)) if args.minutes > 0 else 0


if __name__ == "__main__":
    sys.exit(main())
