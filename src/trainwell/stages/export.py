"""Stage `export`: SavedModel (encoded image bytes in) and TFLite float16/int8, each checked against Keras on the test split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from trainwell import storage
from trainwell.console import say, shown, warn
from trainwell.data.cache import ShardedSplit, open_split, read_cache_manifest
from trainwell.data.decode import DecodeError, decode_image, max_file_bytes, sniff_format
from trainwell.errors import DataError, ExportError
from trainwell.outputs import fresh_staging_dir, guard_stage, guarded, replace_generated_dir, write_json
from trainwell.params import Params, load_params

PARITY_FILE = "parity.json"  # written last: also the marker that the folder is ours (outputs.replace_generated_dir)
ENCODED_FORMATS = ("jpeg", "png", "gif", "bmp")  # what tf.io.decode_image reads; TIFF, WebP and .npy are not
PARITY_BATCH = 256  # images per Keras predict call while measuring parity (a shard at most)


def _representative(split: ShardedSplit, count: int) -> np.ndarray:
    """count training images spread evenly over the split (shards read in order, each once)."""
    total = len(split.labels)
    if total == 0:
        return np.zeros((0, *split.image_shape), np.uint8)
    positions = np.unique(np.linspace(0, total - 1, min(count, total)).astype(np.int64))
    return np.stack([split.image(int(position)) for position in positions])


def _encoded_batch(data_dir: str, paths: list[str], *, max_pixels: int) -> tuple[list[int], list[bytes]]:
    """Positions and bytes of the source files the SavedModel's own decoder reads (JPEG, PNG, GIF, BMP).

    A file changed since `build` (gone, swapped for a FIFO, truncated, too large) is left out, so
    the check is measured on the rest; it never hangs or stops the stage.
    """
    positions, blobs = [], []
    for position, path in enumerate(paths):
        try:
            data = storage.read_regular_file(storage.join(data_dir, path), max_bytes=max_file_bytes(max_pixels))
            decode_image(data, suffix="", max_pixels=max_pixels)
        except (OSError, DecodeError):
            continue
        if sniff_format(data) in ENCODED_FORMATS:
            positions.append(position)
            blobs.append(data)
    return positions, blobs


def _measure(*, params: Params, model, staging: Path, tflite: dict[str, bytes]) -> dict:
    """Keras, SavedModel (pixels and encoded bytes) and TFLite probabilities on the test split, shard by shard."""
    import tensorflow as tf

    from trainwell.training.export import PIXELS_SIGNATURE, SAVED_MODEL, parity, tflite_probabilities

    test = open_split(cache_dir=params.paths.cache_dir, split="test")
    loaded = tf.saved_model.load(str(staging / SAVED_MODEL))
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in ("keras", "saved_model", *tflite)}
    encoded_reference, encoded = [], []
    start = 0
    for shard_file, count in zip(test.image_files, test.counts):
        images = storage.load_npy(shard_file)
        reference = model.predict(images, batch_size=PARITY_BATCH, verbose=0)
        outputs["keras"].append(reference)
        outputs["saved_model"].append(loaded.signatures[PIXELS_SIGNATURE](images=tf.constant(images))["probabilities"].numpy())
        for kind, content in tflite.items():
            outputs[kind].append(tflite_probabilities(content, images))
        positions, blobs = _encoded_batch(params.data.dir, test.paths[start : start + count],
                                          max_pixels=params.audit.max_pixels)
        if blobs:
            served, kept = _serve_encoded(loaded.signatures["serving_default"], blobs)
            if kept:
                encoded_reference.append(reference[[positions[index] for index in kept]])
                encoded.append(served)
        start += count
    classes = len(test.classes)
    joined = {name: np.concatenate(parts) if parts else np.zeros((0, classes)) for name, parts in outputs.items()}
    margin = params.export.tie_margin
    results = {name: parity(joined["keras"], joined[name], tie_margin=margin) for name in ("saved_model", *tflite)}
    results["encoded"] = parity(np.concatenate(encoded_reference) if encoded else np.zeros((0, classes)),
                                np.concatenate(encoded) if encoded else np.zeros((0, classes)), tie_margin=margin)
    results["encoded"]["images"] = int(sum(len(part) for part in encoded))
    return {"test_images": int(sum(test.counts)), **results}


def _serve_encoded(serve, blobs: list[bytes]) -> tuple[np.ndarray, list[int]]:
    """The bytes signature's probabilities and which blobs they belong to. A batch TensorFlow cannot
    decode (one CMYK or odd file fails a whole call) is retried one file at a time, skipping the bad."""
    import tensorflow as tf

    try:
        return serve(image_bytes=tf.constant(blobs))["probabilities"].numpy(), list(range(len(blobs)))
    except tf.errors.InvalidArgumentError:
        rows, kept = [], []
        for index, blob in enumerate(blobs):
            try:
                rows.append(serve(image_bytes=tf.constant([blob]))["probabilities"].numpy()[0])
                kept.append(index)
            except tf.errors.InvalidArgumentError:
                continue
        return (np.stack(rows) if rows else np.zeros((0, 0), np.float32)), kept


def _bars(params: Params) -> dict[str, float]:
    return {"float16": params.export.min_agreement_float16, "int8": params.export.min_agreement_int8,
            "encoded": params.export.min_agreement_encoded}


def _judge(params: Params, results: dict) -> list[str]:
    """The bars the decided test images miss, as sentences. The SavedModel runs the very same graph
    as Keras: any disagreement there, near-tie or not, is a bug and stops the stage."""
    if results["saved_model"]["agreement"] < 1.0:
        raise ExportError(f"export failed: the SavedModel agrees with Keras on {results['saved_model']['agreement']:.4f} "
                          "of the test split though it runs the same graph (a bug in trainwell). Nothing was written")
    return [f"{name} agrees on {results[name]['decided_agreement']:.4f} of the {results[name]['decided_images']} "
            f"decided test images, below {bar}"
            for name, bar in _bars(params).items() if results[name]["decided_agreement"] < bar]


def _summary(name: str, result: dict) -> str:
    return (f"{name} {result['decided_agreement']:.4f} of {result['decided_images']} decided "
            f"({result['agreement']:.4f} of all; largest probability difference {result['max_probability_difference']:.4f})")


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    guard_stage("export", params=params, params_file=params_file)
    if not Path(params.paths.model).exists():
        raise DataError(f"model '{params.paths.model}' is missing; run `dvc repro train` first")
    read_cache_manifest(params.paths.cache_dir)  # what is missing is said before TensorFlow's seconds of start-up
    from trainwell.training.export import SAVED_MODEL, TFLITE_FILES, tflite_models, write_saved_model
    from trainwell.training.model_files import load_model_file
    from trainwell.training.served_limits import served_limits

    model = load_model_file(params.paths.model, compile=False)
    train = open_split(cache_dir=params.paths.cache_dir, split="train")
    final = Path(params.paths.export_dir)
    staging = fresh_staging_dir(final, marker=PARITY_FILE)
    staging.mkdir(parents=True)
    try:
        write_saved_model(model=model, classes=train.classes, path=staging / SAVED_MODEL, limits=served_limits(params))
        representative = (_representative(train, params.export.representative_images)
                          if params.export.int8 == "full_integer" else None)
        tflite = tflite_models(model=model, int8_mode=params.export.int8, representative=representative)
        for kind, content in tflite.items():
            (staging / TFLITE_FILES[kind]).write_bytes(content)
        results = _measure(params=params, model=model, staging=staging, tflite=tflite)
        misses = _judge(params, results)
        write_json(staging / PARITY_FILE, {"int8_mode": params.export.int8, "tie_margin": params.export.tie_margin,
                                           **results, "bars_missed": misses,
                                           "bytes": {name: (staging / file).stat().st_size
                                                     for name, file in TFLITE_FILES.items()}})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_generated_dir(staging, final, marker=PARITY_FILE)
    write_json(params.paths.export_metrics, {**{f"{name}_agreement": round(results[name]["decided_agreement"], 6)
                                                for name in ("saved_model", "encoded", "float16", "int8")},
                                             "bars_missed": len(misses)})
    say("export: agreement with Keras on the test images whose top two probabilities are at least "
        f"{params.export.tie_margin:g} apart: " + "; ".join(_summary(name, results[name]) for name in
                                                           ("saved_model", "encoded", "float16", "int8"))
        + f"; written to {shown(final)}")
    if misses:
        # A warning, not a failure: a short exploratory run must finish. `trainwell gate` holds a release to the bars.
        warn("export: " + "; ".join(misses) + ". Fine for a short experiment; before serving these files, train "
             "longer or try export.int8 (the shipped gate fails on metrics/export.json:bars_missed)")
    return 0
