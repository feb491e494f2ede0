"""Benchmark: images/s of trainwell's training input pipeline beside Keras' own loaders, in one run.

Usage: python benchmarks/input_pipeline.py [--images 3000] [--batch-size 256] [--epochs 3] [--repeats 3]

Contenders, on the same freshly generated folder of 75x75 JPEGs and its build cache:
- trainwell: build-cache shards -> make_train_dataset (uint8 batches; the model normalises);
- keras.utils.image_dataset_from_directory (float32 batches, decodes JPEG every epoch);
- the Keras tutorial's configuration of it: image_dataset_from_directory(...).cache().shuffle(1000)
  .prefetch(AUTOTUNE), decoded once in the first epoch and then served from memory (the timed
  epochs come after it), batches reshuffled as wholes;
- legacy ImageDataGenerator.flow_from_directory (float32 batches, Python iterator).
With albumentations: trainwell's augmented pipeline beside albumentations' own loop on the same
images and transforms (bar: >= 80%).
Each epoch is checked for honesty before it counts: every contender must deliver every image
exactly once per epoch (same multiset, compared by content) in an order that changes between
epochs, at 75x75x3 and the requested batch size (one smaller batch per epoch). Contenders run interleaved, `repeats` times;
the median is reported. Bar: trainwell >= 150k images/s and >= 10x image_dataset_from_directory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from trainwell.data.cache import build_cache, load_split
from trainwell.data.demo import SHAPES, draw_shape, encode_jpeg
from trainwell.data.splits import write_split_csv
from trainwell.outputs import write_json
from trainwell.params import AugmentStep
from trainwell.training.augment import BatchAugmenter, default_processes


def make_folder(root: Path, images: int) -> list[tuple[str, str]]:
    rows = []
    for index in range(images):
        label = SHAPES[index % len(SHAPES)]
        image = draw_shape(shape=label, size=75, rng=np.random.default_rng([7, index]))
        path = root / label / f"{index:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(image))
        rows.append((f"{label}/{index:06d}.jpg", label))
    return rows


def fingerprint(batch: np.ndarray) -> list[str]:
    """A per-image key that survives uint8/float32 and [0,1]/[0,255] differences (8-level buckets)."""
    array = np.asarray(batch, dtype=np.float32)
    if array.max() <= 1.0:
        array = array * 255.0
    coarse = (np.clip(array, 0, 255) // 32).astype(np.uint8)
    return [hashlib.blake2b(image.tobytes(), digest_size=8).hexdigest() for image in coarse]


def run_epochs(batches_per_epoch, epochs: int, count: int, batch_size: int, name: str) -> tuple[float, str, np.ndarray]:
    """Time `epochs` epochs after two checked ones; also return the sorted per-image mean brightness
    (0-255) of an epoch, so the caller can check that all contenders deliver the same pictures."""
    seen_orders, reference, means = [], None, []
    for epoch in range(2):  # honesty: two epochs, same multiset, different order
        keys, shapes, partial = [], set(), 0
        for images in batches_per_epoch(epoch):
            shapes.add(tuple(images.shape[1:]))
            if epoch == 0:
                scale = 255.0 if np.asarray(images).max() <= 1.0 else 1.0
                means.extend((np.asarray(images, dtype=np.float32) * scale).mean(axis=(1, 2, 3)).tolist())
            if len(images) != batch_size:
                partial += 1  # one per epoch (the tutorial's shuffle of cached batches moves it anywhere)
                if partial > 1 or count % batch_size != len(images):
                    raise AssertionError(f"{name}: a batch of {len(images)} in an epoch of {count}")
            keys.extend(fingerprint(images))
        if shapes != {(75, 75, 3)}:
            raise AssertionError(f"{name}: delivered shapes {shapes}")
        if len(keys) != count:
            raise AssertionError(f"{name}: {len(keys)} images in an epoch of {count}")
        if reference is None:
            reference = Counter(keys)
        elif Counter(keys) != reference:
            raise AssertionError(f"{name}: epochs deliver different images")
        seen_orders.append(keys)
    if seen_orders[0] == seen_orders[1]:
        raise AssertionError(f"{name}: the order does not change between epochs (a cache after the shuffle?)")
    start = time.perf_counter()
    delivered, dtype = 0, ""
    for epoch in range(2, 2 + epochs):
        for images in batches_per_epoch(epoch):
            delivered += len(images)
            dtype = str(images.dtype)
    return delivered / (time.perf_counter() - start), dtype, np.sort(np.array(means))


AUGMENT = [
    AugmentStep(name="HorizontalFlip", params={"p": 0.5}),
    AugmentStep(name="Affine", params={"rotate": [-15, 15], "p": 1.0}),
    AugmentStep(name="RandomBrightnessContrast", params={"p": 0.5}),
]


def compare_augmentation(train, *, batch: int, repeats: int) -> None:
    """trainwell's augmented pipeline (batch per Python call, per-example seeds) beside
    albumentations' own loop over the same images with the same transforms, in this process."""
    import albumentations

    from trainwell.training.inputs import BatchSpec, make_train_dataset

    bare = albumentations.Compose([getattr(albumentations, step.name)(**step.params) for step in AUGMENT])
    count = len(train.labels)
    augmenter = BatchAugmenter(AUGMENT, processes=default_processes())

    def epoch(number: int) -> tuple[list[np.ndarray], float]:
        """One epoch from a fresh iterator, timed from its first batch on (a running training
        pipeline is already warm): a live iterator would keep augmenting into its prefetch buffer
        while the bare loop is timed, slowing the loop and banking batches."""
        dataset = make_train_dataset(images=train.images, labels=train.labels, spec=BatchSpec(
            num_classes=5, batch_size=batch, seed=0, first_epoch=number, epochs=number + 1, augmenter=augmenter))
        iterator = iter(dataset)
        batches = [next(iterator)[0].numpy()]
        start = time.perf_counter()
        batches += [images.numpy() for images, _ in iterator]
        return batches, sum(len(images) for images in batches[1:]) / (time.perf_counter() - start)

    delivered = np.concatenate(epoch(0)[0])  # warm-up epoch, checked
    if delivered.shape != train.images.shape or np.array_equal(np.sort(delivered, axis=None),
                                                               np.sort(train.images, axis=None)):
        raise AssertionError("the augmented pipeline did not deliver one augmented image per training image")
    ours, loop = [], []
    for repeat in range(repeats):
        start = time.perf_counter()
        for image in train.images:
            bare(image=image)
        loop.append(count / (time.perf_counter() - start))
        ours.append(epoch(repeat + 1)[1])
    ours_rate, loop_rate = statistics.median(ours), statistics.median(loop)
    share = ours_rate / loop_rate
    print(f"with albumentations ({', '.join(step.name for step in AUGMENT)}), {repeats} interleaved repeats, "
          f"{augmenter.processes} worker process(es) beside the pipeline thread:")
    print(f"  {'trainwell pipeline, batch ' + str(batch):40s} {ours_rate:10.0f} images/s")
    print(f"  {'albumentations bare loop, one process':40s} {loop_rate:10.0f} images/s")
    print(f"trainwell / bare loop = {share:.2f}; bar: >= 0.80: {'PASS' if share >= 0.8 else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # After the arguments: these start TensorFlow, and `--help` should not wait for it.
    import tensorflow as tf

    from trainwell.training.inputs import BatchSpec, make_train_dataset, steps_per_epoch

    workspace = Path(tempfile.mkdtemp(prefix="trainwell-bench-input-"))
    try:
        root = workspace / "images"
        rows = make_folder(root, args.images)
        splits = workspace / "splits"
        write_split_csv(splits / "train.csv", rows)
        write_split_csv(splits / "val.csv", [])
        write_split_csv(splits / "test.csv", [])
        write_json(splits / "classes.json", sorted(SHAPES))
        build_cache(data_dir=str(root), splits_dir=str(splits), cache_dir=str(workspace / "cache"), image_size=75,
                    shard_size=4096, workers=os.cpu_count() or 1, max_pixels=10**8, seed=0)
        train = load_split(cache_dir=workspace / "cache", split="train")
        count, batch = len(train.labels), args.batch_size
        total_epochs = 2 + args.epochs

        ours = make_train_dataset(images=train.images, labels=train.labels, spec=BatchSpec(
            num_classes=5, batch_size=batch, seed=0, first_epoch=0, epochs=total_epochs))
        ours_iterator = iter(ours)
        steps = steps_per_epoch(count=count, batch_size=batch)

        def trainwell_epoch(epoch: int):
            for _ in range(steps):
                yield next(ours_iterator)[0].numpy()

        keras_dataset = tf.keras.utils.image_dataset_from_directory(
            root, image_size=(75, 75), batch_size=batch, shuffle=True, seed=0, label_mode="categorical", verbose=False
        ).prefetch(tf.data.AUTOTUNE)

        def keras_epoch(epoch: int):
            for images, _ in keras_dataset:
                yield images.numpy()

        # What the Keras tutorial runs: decoded once, then cached batches in a new order each epoch.
        tutorial_dataset = tf.keras.utils.image_dataset_from_directory(
            root, image_size=(75, 75), batch_size=batch, shuffle=True, seed=0, label_mode="categorical", verbose=False
        ).cache().shuffle(1000).prefetch(tf.data.AUTOTUNE)

        def tutorial_epoch(epoch: int):
            for images, _ in tutorial_dataset:
                yield images.numpy()

        from keras.src.legacy.preprocessing.image import ImageDataGenerator

        generator = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
            root, target_size=(75, 75), batch_size=batch, shuffle=True, seed=0, class_mode="categorical"
        )

        def legacy_epoch(epoch: int):
            for _ in range(len(generator)):
                yield next(generator)[0]

        contenders = {
            "trainwell (build cache, uint8)": trainwell_epoch,
            "image_dataset_from_directory": keras_epoch,
            "tutorial: ...cache().shuffle().prefetch()": tutorial_epoch,
            "ImageDataGenerator.flow_from_directory": legacy_epoch,
        }
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        dtypes: dict[str, str] = {}
        pictures: dict[str, np.ndarray] = {}
        for repeat in range(args.repeats):
            if repeat:
                ours_iterator = iter(ours)
            for name, epochs in contenders.items():
                rate, dtypes[name], pictures[name] = run_epochs(epochs, args.epochs, count, batch, name)
                rates[name].append(rate)
        reference = pictures["trainwell (build cache, uint8)"]
        for name, means in pictures.items():
            # JPEG decoders differ by a level or two; different pictures differ by far more.
            if len(means) != len(reference) or np.abs(means - reference).max() > 2.0:
                raise AssertionError(f"{name} does not deliver the same pictures as trainwell")
        print(f"{count} JPEGs at 75x75, batch {batch}, {args.epochs} timed epochs x {args.repeats} interleaved repeats "
              "(every contender passed: same pictures as the others, each once per epoch, new order per epoch, "
              "75x75x3, full batches)")
        medians = {name: statistics.median(values) for name, values in rates.items()}
        for name, value in medians.items():
            print(f"  {name:40s} {value:10.0f} images/s  delivers {dtypes[name]}")
        ours_rate = medians["trainwell (build cache, uint8)"]
        ratio = ours_rate / medians["image_dataset_from_directory"]
        legacy = ours_rate / medians["ImageDataGenerator.flow_from_directory"]
        tutorial = ours_rate / medians["tutorial: ...cache().shuffle().prefetch()"]
        verdict = "PASS" if ours_rate >= 150_000 and ratio >= 10 else "FAIL"
        print(f"trainwell / image_dataset_from_directory = {ratio:.1f}x, / flow_from_directory = {legacy:.1f}x; "
              f"bar: >= 150k images/s and >= 10x: {verdict}")
        print(f"trainwell / the tutorial's cached configuration = {tutorial:.1f}x (epochs after the first; it "
              "reshuffles whole cached batches, so a batch holds the same images every epoch)")
        compare_augmentation(train, batch=batch, repeats=args.repeats)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()
