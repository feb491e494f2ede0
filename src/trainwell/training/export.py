"""Exporting the trained model for serving: a SavedModel taking encoded images, TFLite float16 and int8, and their parity with Keras."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from trainwell import storage
from trainwell.console import native_logs_hidden
from trainwell.data.cache import ShardedSplit, open_split
from trainwell.data.decode import DecodeError, decode_image, max_file_bytes, sniff_format
from trainwell.errors import ExportError
from trainwell.training.served_input import check_request
from trainwell.training.served_limits import ServedLimits

SAVED_MODEL = "saved_model"
TFLITE_FILES = {"float16": "model_float16.tflite", "int8": "model_int8.tflite"}
PIXELS_SIGNATURE = "serve_pixels"
# Images of one request decoded and classified together: a request of 100,000 small JPEGs holds
# the decoded pixels and activations of this many at a time, not of all of them.
SERVED_BATCH = 64
# Images of a batch decoded at once (map_fn's parallel iterations, TensorFlow's default in a
# graph): each takes about audit.max_pixels x 3 bytes (0.11 GiB measured for 40 million pixels),
# so a request peaks near 10 of them; 4 at once served ordinary JPEGs 20-30% slower.
PARALLEL_DECODES = 10


def decode_for_serving(image_bytes: tf.Tensor, *, size: int, gif_first_image_end: tf.Tensor | int = 0) -> tf.Tensor:
    """TensorFlow's twin of `data.decode.prepare_image` for one encoded JPEG, PNG, GIF or BMP: (size, size, 3) uint8.

    A GIF is cut after its first image (served_input.gif_first_image) and given its trailer, so
    its other frames are never decoded: the first is all training ever used.

    JPEG is decoded with libjpeg's accurate integer DCT, which is what Pillow uses: TensorFlow's
    default (the fast DCT) changed pixels by up to 8 levels in every demo image, and 0.3% of test
    predictions with them. Grey and alpha become RGB as in training. A file at size x size is
    then identical to the cache; a resize rounds a little differently from Pillow's (see the
    export metrics' `encoded` agreement).
    """
    cut = tf.cast(gif_first_image_end, tf.int64)
    image_bytes = tf.cond(cut > 0, lambda: tf.strings.join([tf.strings.substr(image_bytes, tf.constant(0, tf.int64), cut), b"\x3b"]),
                          lambda: image_bytes)
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )
    image = tf.ensure_shape(image, (None, None, 3))
    height, width = tf.shape(image)[0], tf.shape(image)[1]

    def resized() -> tf.Tensor:
        shrinking = tf.minimum(height, width) > size
        # Area averaging to shrink and bilinear to enlarge: Pillow's BOX and BILINEAR in training.
        scaled = tf.cond(shrinking, lambda: tf.image.resize(image, (size, size), method="area"),
                         lambda: tf.image.resize(image, (size, size), method="bilinear"))
        return tf.cast(tf.clip_by_value(tf.round(scaled), 0.0, 255.0), tf.uint8)

    return tf.cond(tf.logical_and(tf.equal(height, size), tf.equal(width, size)), lambda: image, resized)


class ServingModule(tf.Module):
    """What the SavedModel holds: the Keras model plus two signatures.

    A tf.Module saved with tf.saved_model.save, not keras' ExportArchive: the archive lists the
    variables in an order that changes from run to run, so its files were never byte-identical.
    """

    def __init__(self, model: keras.Model, classes: list[str], limits: ServedLimits):
        super().__init__(name="trainwell_serving")
        self.model = model
        self.class_names = tf.constant(classes)
        self.limits = limits
        size = int(model.input_shape[1])
        self.image_size = size
        self.serve_bytes = tf.function(self._serve_bytes,
                                       input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        self.serve_pixels = tf.function(self._serve_pixels,
                                        input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])

    def _outputs(self, probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        count = tf.shape(probabilities)[0]
        return {
            "probabilities": probabilities,
            "class_name": tf.gather(self.class_names, tf.argmax(probabilities, axis=-1)),
            # Each row names the columns of `probabilities`: a client needs nothing but the response.
            "class_names": tf.tile(self.class_names[tf.newaxis], [count, 1]),
        }

    def _serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Every image checked against the limits first (a refused one fails the request, see
        served_input), then SERVED_BATCH at a time decoded and classified."""
        size = self.image_size
        checked = check_request(image_bytes, self.limits)
        count = tf.size(checked.image_bytes)
        batches = (count + SERVED_BATCH - 1) // SERVED_BATCH

        def classify(index: tf.Tensor, results: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
            part = slice(index * SERVED_BATCH, (index + 1) * SERVED_BATCH)
            images = tf.map_fn(lambda item: decode_for_serving(item[0], size=size, gif_first_image_end=item[1]),
                               (checked.image_bytes[part], checked.gif_first_image_end[part]),
                               fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
                               parallel_iterations=PARALLEL_DECODES)
            return index + 1, results.write(index, tf.cast(self.model(images, training=False), tf.float32))

        classes = int(self.class_names.shape[0])
        results = tf.TensorArray(tf.float32, size=batches, element_shape=tf.TensorShape([None, classes]),
                                 infer_shape=False)
        _, results = tf.while_loop(lambda index, _: index < batches, classify, [tf.constant(0), results])
        return self._outputs(results.concat())

    def _serve_pixels(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Probabilities only: TFLite is converted from this signature, and its string ops are limited.
        return {"probabilities": tf.cast(self.model(images, training=False), tf.float32)}


def write_saved_model(*, model: keras.Model, classes: list[str], path: Path, limits: ServedLimits) -> None:
    """A SavedModel whose default signature takes encoded image bytes ([N] strings) within `limits`, and a pixels signature."""
    module = ServingModule(model, classes, limits)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve_bytes,
                                                       PIXELS_SIGNATURE: module.serve_pixels})


def _pixels_archive(model: keras.Model, path: Path) -> None:
    """The pixels signature alone, saved by keras' ExportArchive: the TFLite converter fails on the
    tf.Module's variable reads ("missing attribute 'value'") and reads this one; its variable order
    varies between runs, but the flatbuffer converted from it is byte-identical (checked)."""
    size = int(model.input_shape[1])
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=PIXELS_SIGNATURE,
                         fn=lambda images: {"probabilities": tf.cast(model(images, training=False), tf.float32)},
                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
    archive.write_out(str(path), verbose=False)


def _convert(archive: Path, *, kind: str, int8_mode: str, representative: np.ndarray | None) -> bytes:
    """One TFLite flatbuffer from the pixels archive: float16 weights, or int8 (dynamic range or full integer)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(archive), signature_keys=[PIXELS_SIGNATURE])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif int8_mode == "full_integer":
        if representative is None or not len(representative):
            raise ValueError("full_integer int8 needs representative images")
        samples = representative

        def calibration() -> Iterator[list[np.ndarray]]:
            for image in samples:  # one at a time: the converter calibrates per example
                yield [image[np.newaxis]]

        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # dynamic_range: Optimize.DEFAULT alone stores int8 weights and quantises activations per batch.
    return bytes(converter.convert())


def tflite_models(*, model: keras.Model, int8_mode: str = "dynamic_range",
                  representative: np.ndarray | None = None) -> dict[str, bytes]:
    """The model on uint8 pixels as TFLite flatbuffers, one per kind in TFLITE_FILES, from one temporary archive."""
    with tempfile.TemporaryDirectory(prefix="trainwell-tflite-") as folder, native_logs_hidden():
        archive = Path(folder) / "pixels"
        _pixels_archive(model, archive)
        return {kind: _convert(archive, kind=kind, int8_mode=int8_mode, representative=representative)
                for kind in TFLITE_FILES}


def tflite_probabilities(model_content: bytes, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Run a TFLite model's `probabilities` output over images in batches."""
    interpreter = tf.lite.Interpreter(model_content=model_content)
    runner = interpreter.get_signature_runner(PIXELS_SIGNATURE)
    parts = [np.asarray(runner(images=images[start : start + batch_size])["probabilities"], np.float32)
             for start in range(0, len(images), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


# Decimals kept of the largest probability difference. The figure lands in files DVC hashes, and
# its last digits come from the CPU's math kernels (TFLite's and oneDNN's SIMD paths differ between
# CPU families by ~1e-7): at 4 decimals another machine writes the same bytes, and 1e-4 of a
# probability is below anything a user would act on.
DIFFERENCE_DECIMALS = 4


def parity(reference: np.ndarray, candidate: np.ndarray, *, tie_margin: float = 0.0) -> dict[str, float]:
    """Top-1 agreement over every image and over the decided ones, and the largest probability gap
    (rounded to DIFFERENCE_DECIMALS so the figure does not depend on the machine).

    An image is decided when the reference's most probable class leads the second by at least
    tie_margin (a probability, 0-1). Below it the two classes are a near-tie that the rounding of
    float16 or int8 arithmetic may flip either way: such a flip says nothing about the export, and a
    short run's model is mostly near-ties. `decided_agreement` is what the export bars judge.
    """
    if len(reference) == 0:
        return {"agreement": 1.0, "decided_agreement": 1.0, "decided_images": 0, "max_probability_difference": 0.0}
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    ranked = np.sort(reference, axis=1)
    lead = ranked[:, -1] - ranked[:, -2] if reference.shape[1] > 1 else np.ones(len(reference))
    decided = lead >= tie_margin
    return {
        "agreement": float(np.mean(same)),
        "decided_agreement": float(np.mean(same[decided])) if decided.any() else 1.0,
        "decided_images": int(decided.sum()),
        "max_probability_difference": round(float(np.abs(reference - candidate).max()), DIFFERENCE_DECIMALS),
    }


# -- measuring parity on the test split --------------------------------------------------------

ENCODED_FORMATS = ("jpeg", "png", "gif", "bmp")  # what tf.io.decode_image reads; TIFF, WebP and .npy are not
PARITY_BATCH = 256  # images per Keras predict call while measuring parity (a shard at most)


def representative_images(split: ShardedSplit, count: int) -> np.ndarray:
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


def measure_parity(*, model: keras.Model, saved_model_dir: Path, tflite: dict[str, bytes], cache_dir: str,
                   data_dir: str, max_pixels: int, tie_margin: float) -> dict:
    """Keras, SavedModel (pixels and encoded bytes) and TFLite probabilities on the test split, shard
    by shard, compared by `parity`: one entry per export, and the test split's image count."""
    test = open_split(cache_dir=cache_dir, split="test")
    loaded = tf.saved_model.load(str(saved_model_dir))
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
        positions, blobs = _encoded_batch(data_dir, test.paths[start : start + count], max_pixels=max_pixels)
        if blobs:
            served, kept = _serve_encoded(loaded.signatures["serving_default"], blobs)
            if kept:
                encoded_reference.append(reference[[positions[index] for index in kept]])
                encoded.append(served)
        start += count
    classes = len(test.classes)
    joined = {name: np.concatenate(parts) if parts else np.zeros((0, classes)) for name, parts in outputs.items()}
    results: dict = {name: parity(joined["keras"], joined[name], tie_margin=tie_margin)
                     for name in ("saved_model", *tflite)}
    results["encoded"] = parity(np.concatenate(encoded_reference) if encoded else np.zeros((0, classes)),
                                np.concatenate(encoded) if encoded else np.zeros((0, classes)), tie_margin=tie_margin)
    results["encoded"]["images"] = int(sum(len(part) for part in encoded))
    return {"test_images": int(sum(test.counts)), **results}


def _serve_encoded(serve: Callable[..., dict[str, tf.Tensor]], blobs: list[bytes]) -> tuple[np.ndarray, list[int]]:
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


def bars_missed(results: dict, *, bars: dict[str, float]) -> list[str]:
    """The bars the decided test images miss, as sentences. The SavedModel runs the very same graph
    as Keras: any disagreement there, near-tie or not, is a bug and stops the stage."""
    if results["saved_model"]["agreement"] < 1.0:
        raise ExportError(f"export failed: the SavedModel agrees with Keras on {results['saved_model']['agreement']:.4f} "
                          "of the test split though it runs the same graph (a bug in trainwell). Nothing was written")
    return [f"{name} agrees on {results[name]['decided_agreement']:.4f} of the {results[name]['decided_images']} "
            f"decided test images, below {bar}"
            for name, bar in bars.items() if results[name]["decided_agreement"] < bar]
