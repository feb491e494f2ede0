"""albumentations per batch: the same seed gives the same augmented batches at any parallelism or device count."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import tiny_params, write_params
from trainwell.errors import ParamsError
from trainwell.params import AugmentStep
from trainwell.stages import train
from trainwell.training.augment import BatchAugmenter, example_seeds
from trainwell.training.inputs import BatchSpec, make_train_dataset

STEPS = [
    AugmentStep(name="HorizontalFlip", params={"p": 0.5}),
    AugmentStep(name="Affine", params={"rotate": [-20, 20], "p": 1.0}),
    AugmentStep(name="RandomBrightnessContrast", params={"p": 0.8}),
]


def images(count: int = 24, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, size=(count, size, size, 3), dtype=np.uint8)


def batches(*, seed: int, replicas: int = 1, pipeline: int = 0, pipelines: int = 1) -> list[np.ndarray]:
    data = images()
    dataset = make_train_dataset(images=data, labels=np.arange(len(data)) % 5, spec=BatchSpec(
        num_classes=5, batch_size=8, seed=seed, first_epoch=0, epochs=2, augmenter=BatchAugmenter(STEPS),
        replicas=replicas, pipeline=pipeline, pipelines=pipelines))
    return [batch[0].numpy() for batch in dataset]


def test_each_example_is_seeded_alone_eagerly_and_inside_dataset_map():
    augmenter, data = BatchAugmenter(STEPS), images(8)
    seeds = example_seeds(seed=1, epoch=tf.constant(3, tf.int64), indices=tf.range(8, dtype=tf.int64)).numpy()
    whole = augmenter(data, seeds)
    one_by_one = np.concatenate([augmenter(data[i : i + 1], seeds[i : i + 1]) for i in range(8)])
    np.testing.assert_array_equal(whole, one_by_one)  # batch composition does not matter
    assert not np.array_equal(whole, data)  # it did augment
    mapped = tf.data.Dataset.from_tensors((data, seeds)).map(augmenter.apply)
    np.testing.assert_array_equal(next(iter(mapped)).numpy(), whole)


def test_same_seed_same_batches_other_seed_other_batches():
    first, again, other = batches(seed=5), batches(seed=5), batches(seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    epoch_one, epoch_two = np.concatenate(first[:3]), np.concatenate(first[3:])
    assert not np.array_equal(np.sort(epoch_one, axis=None), np.sort(epoch_two, axis=None))  # fresh draws per epoch


def test_augmentation_does_not_depend_on_the_device_count():
    single = batches(seed=5)
    # Two workers with one replica each: worker p gets slice p of every global batch.
    halves = [batches(seed=5, replicas=2, pipeline=p, pipelines=2) for p in (0, 1)]
    for step, batch in enumerate(single):
        np.testing.assert_array_equal(np.concatenate([halves[0][step], halves[1][step]]), batch)


def test_bad_transforms_are_params_errors_naming_the_step():
    with pytest.raises(ParamsError, match="step 1: 'HorizontallyFlip' is not an albumentations transform"):
        BatchAugmenter([AugmentStep(name="HorizontallyFlip")])
    with pytest.raises(ParamsError, match=r"step 1 \(Affine\): invalid params"):
        BatchAugmenter([AugmentStep(name="Affine", params={"rotate_degrees": 5})])
    resize = BatchAugmenter([AugmentStep(name="Resize", params={"height": 8, "width": 8})])
    with pytest.raises(ParamsError, match="changed an image from"):
        resize(images(2), np.arange(2, dtype=np.int64))


@pytest.mark.train
def test_training_with_augmentation(built, capsys):
    params = tiny_params()
    params["train"]["augment"] = [{"name": "HorizontalFlip", "params": {"p": 0.5}},
                                  {"name": "Affine", "params": {"rotate": [-10, 10]}}]
    write_params(built, params)
    assert train.main() == 0
    assert "0 guard incident(s)" in capsys.readouterr().out


LAYERS = [{"name": "RandomFlip", "params": {"mode": "horizontal"}},
          {"name": "RandomRotation", "params": {"factor": 0.05}}]


def test_keras_augmentation_layers_act_in_training_only():
    import keras

    from trainwell.params import TrainParams
    from trainwell.training.network import model_for

    model = model_for(TrainParams(augment_layers=LAYERS), num_classes=5, image_size=16)
    augmented = keras.Model(model.input, model.get_layer("augment2").output)
    batch = images(4)
    np.testing.assert_allclose(augmented(batch, training=False).numpy(), batch / 255.0, atol=1e-6)
    assert not np.allclose(augmented(batch, training=True).numpy(), batch / 255.0, atol=1e-3)
    with pytest.raises(ParamsError, match=r"'Flip' is not a Keras random preprocessing layer; use one of .*RandomFlip"):
        model_for(TrainParams(augment_layers=[{"name": "Flip"}]), num_classes=5, image_size=16)
    with pytest.raises(ParamsError, match=r"step 1 \(RandomFlip\): invalid params"):
        model_for(TrainParams(augment_layers=[{"name": "RandomFlip", "params": {"modes": "horizontal"}}]),
                  num_classes=5, image_size=16)


@pytest.mark.train
def test_training_with_keras_augmentation_layers_is_reproducible(built):
    import keras

    params = tiny_params()
    params["train"]["augment_layers"] = LAYERS
    write_params(built, params)
    runs = []
    for _ in range(2):
        assert train.main() == 0
        runs.append(keras.models.load_model("models/model.keras").get_weights())
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)


def test_worker_processes_change_nothing_but_speed():
    data = images(40)
    seeds = example_seeds(seed=2, epoch=tf.constant(1, tf.int64), indices=tf.range(40, dtype=tf.int64)).numpy()
    alone = BatchAugmenter(STEPS, processes=0)(data, seeds)
    shared = BatchAugmenter(STEPS, processes=1)
    np.testing.assert_array_equal(shared(data, seeds), alone)
    np.testing.assert_array_equal(shared(data[:30], seeds[:30]), alone[:30])  # the shared block is reused
