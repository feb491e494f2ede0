"""Pretrained backbones: a keras.applications network built without downloads, its weights from a local file, a softmax head."""

from __future__ import annotations

import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras

from trainwell import storage
from trainwell.errors import ParamsError
from trainwell.params import NO_WEIGHTS, TrainParams

MOBILENET_V3_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
EFFICIENTNET_V2_URL = "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"


@dataclass(frozen=True)
class BackboneSpec:
    """One keras.applications family member, and where its ImageNet weights without the top are published."""

    constructor: str  # the keras.applications function
    weights_file: str  # what Keras names the include_top=False ImageNet file (also in ~/.keras/models/)
    weights_url: str
    weights_md5: str  # Keras' own check of that file (keras.utils.get_file's file_hash)
    # What the model does to a [0, 255] image before its first convolution (include_preprocessing=True).
    preprocessing: str


MOBILENET_V3 = "Rescaling(1/127.5, offset=-1): [0, 255] -> [-1, 1]"
EFFICIENTNET_V2_B = "Rescaling(1/255) then Normalization with ImageNet's channel mean and variance"

# The largest backbone weights file hashed (bytes): keras.applications' largest here is ~60 MB.
MAX_WEIGHTS_BYTES = 4 << 30

BACKBONES = {
    "MobileNetV3Small": BackboneSpec("MobileNetV3Small", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                                     MOBILENET_V3_URL, "d3e8ec802a04aa4fc771ee12a9a9b836", MOBILENET_V3),
    "MobileNetV3Large": BackboneSpec("MobileNetV3Large", "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
                                     MOBILENET_V3_URL, "07fb09a5933dd0c8eaafa16978110389", MOBILENET_V3),
    "EfficientNetV2B0": BackboneSpec("EfficientNetV2B0", "efficientnetv2-b0_notop.h5", EFFICIENTNET_V2_URL,
                                     "893217f2bb855e2983157299931e43ff", EFFICIENTNET_V2_B),
    "EfficientNetV2B1": BackboneSpec("EfficientNetV2B1", "efficientnetv2-b1_notop.h5", EFFICIENTNET_V2_URL,
                                     "0e80663031ca32d657f9caa404b6ec37", EFFICIENTNET_V2_B),
    "EfficientNetV2B2": BackboneSpec("EfficientNetV2B2", "efficientnetv2-b2_notop.h5", EFFICIENTNET_V2_URL,
                                     "1dfe2e7a5d45b6632553a8961ea609eb", EFFICIENTNET_V2_B),
    "EfficientNetV2B3": BackboneSpec("EfficientNetV2B3", "efficientnetv2-b3_notop.h5", EFFICIENTNET_V2_URL,
                                     "f6abf7b5849ac99a89b50dd3fd532856", EFFICIENTNET_V2_B),
}

# Keras' two weights-only formats: .weights.h5 (Keras 3, by layer path) and the legacy .h5 (by layer
# order) that keras.applications publishes. Neither loader reads a model config from the file, so
# no layer is deserialized and no code runs; Keras (3.15) also refuses HDF5 external and soft links,
# external and virtual datasets, and datasets whose declared size dwarfs their stored size.
WEIGHTS_SUFFIXES = (".weights.h5", ".h5")


def how_to_get_weights(model: str) -> str:
    """One sentence for an error message: where the official file is, or how to write one's own."""
    spec = BACKBONES[model]
    return (f"Download {model}'s ImageNet weights without the top (include_top=False) by hand from "
            f"{spec.weights_url}{spec.weights_file} (md5 {spec.weights_md5}; a Keras program that once ran "
            f"{spec.constructor}(include_top=False, weights='imagenet') left it in ~/.keras/models/), or save your "
            f"own with keras.applications.{spec.constructor}(include_top=False, weights=None, ...).save_weights"
            f"('{model}.weights.h5').")


def weights_path(train: TrainParams) -> Path | None:
    """The local weights file train.weights names (None for random initialisation), checked to be loadable."""
    if train.weights == NO_WEIGHTS or train.model not in BACKBONES:
        return None
    path = Path(train.weights)
    if train.weights.lower() == "imagenet":
        raise ParamsError(f"train.weights takes '{NO_WEIGHTS}' or the path of a local weights file; trainwell never "
                          f"downloads at run time. {how_to_get_weights(train.model)} Put the file in your project "
                          f"(e.g. models/pretrained/, tracked with `dvc add`) and set train.weights to its path")
    if "://" in train.weights:
        raise ParamsError(f"train.weights '{train.weights}' must be a local file; copy it into the project first")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ParamsError(f"train.weights '{train.weights}' does not exist (relative paths start from the project "
                          f"folder, {Path.cwd()}); trainwell never downloads at run time. "
                          f"{how_to_get_weights(train.model)} Put it at that path, or set train.weights: "
                          f"{NO_WEIGHTS} to start from random weights") from None
    except OSError as exc:
        raise ParamsError(f"train.weights '{train.weights}' cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):  # a folder, or a FIFO or device that could block or never end
        raise ParamsError(f"train.weights '{train.weights}' is not a regular file")
    if not path.name.lower().endswith(WEIGHTS_SUFFIXES):
        raise ParamsError(f"train.weights '{train.weights}' is not a weights file: trainwell loads "
                          f"{' or '.join(WEIGHTS_SUFFIXES)} files (arrays only, never a model config)")
    return path


def weights_digest(path: Path | None) -> str | None:
    """sha256 of the weights file: a run resumes from a backup only with the same weights."""
    if path is None:
        return None
    try:
        return storage.file_digest(path, max_bytes=MAX_WEIGHTS_BYTES, limit="a backbone's weights file may have").hex()
    except OSError as exc:  # swapped for a FIFO or a folder since weights_path looked, or grown past the bound
        raise ParamsError(f"train.weights '{path}' cannot be read: {exc.strerror or exc}") from None


def make_backbone(model: str, *, image_size: int, weights: Path | None) -> keras.Model:
    """keras.applications.<model>(include_top=False, weights=None) at image_size, then the file's weights.

    Built with weights=None always, so Keras never downloads anything; include_preprocessing stays
    on, so the backbone takes [0, 255] images and scales them its own way (BackboneSpec.preprocessing).
    """
    spec = BACKBONES[model]
    constructor = getattr(keras.applications, spec.constructor)
    backbone = constructor(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if weights is None:
        return backbone
    advice = (f"The file must hold the weights of {model} without its top, as {spec.weights_file} or "
              f"backbone.save_weights('....weights.h5') write them")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            backbone.load_weights(weights)
        except Exception as exc:  # a wrong or hostile file must read as that, not as a bug in trainwell
            raise ParamsError(f"train.weights '{weights}' could not be loaded into {model} (include_top=False): "
                              f"{type(exc).__name__}: {str(exc)[:300]}. {advice}") from None
    # Keras warns, and goes on, when a part of the model finds nothing in the file: that part would
    # train from random weights while the run claims pretrained ones.
    skipped = [str(warning.message) for warning in caught if "Skipping" in str(warning.message)
               or "freshly-initialized" in str(warning.message)]
    if skipped:
        raise ParamsError(f"train.weights '{weights}' does not cover all of {model}: {skipped[0][:300]}. {advice}")
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return backbone


def build_backbone_classifier(
    *,
    model: str,
    num_classes: int,
    image_size: int,
    weights: Path | None,
    head_dropout: float,
    output_activation: str,
    seed: int,
    augment_layers: list[keras.layers.Layer] | None = None,
) -> keras.Model:
    """uint8 images -> [augmentation] -> backbone -> GlobalAveragePooling -> Dropout -> Dense head (float32).

    With pretrained weights the backbone's BatchNormalization layers stay frozen, also while the
    rest is fine-tuned (set_backbone_frozen), as Keras' transfer-learning guide advises: they keep
    the statistics they were trained with instead of re-estimating them from a few small batches.
    Randomly initialised, they train normally.
    """
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes to train a classifier, got {num_classes}")
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
    x = inputs
    if augment_layers:
        # The augmentation layers see [0, 1] images, as in the cnn (docs/training.md: train.augment_layers);
        # the backbone's own preprocessing expects [0, 255] again.
        x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(x)
        for layer in augment_layers:
            x = layer(x)
        x = keras.layers.Rescaling(255.0, name="to_pixel_range")(x)
    backbone = make_backbone(model, image_size=image_size, weights=weights)
    if weights is not None:
        keep_batchnorm_statistics(backbone)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if head_dropout > 0:
        x = keras.layers.Dropout(head_dropout, seed=seed, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation=output_activation, dtype="float32", name="class_scores")(x)
    return keras.Model(inputs, outputs, name=f"trainwell_{model}")


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The backbone inside a classifier build_backbone_classifier made (None for the cnn)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested[0] if len(nested) == 1 else None


def keep_batchnorm_statistics(backbone: keras.Model) -> None:
    """Freeze the backbone's BatchNormalization layers: Keras 3 then runs them in inference mode.

    Calling the backbone with training=False, the guide's other advice, does not hold in Keras 3:
    fit() passes training=True to every layer of a nested model (keras-team/keras#20285), and the
    moving statistics drift (a test caught it).
    """
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def set_backbone_frozen(model: keras.Model, frozen: bool, *, pretrained: bool) -> None:
    """Freeze (trainable=False) or release the backbone, a pretrained one's BatchNormalization
    layers excepted; recompile afterwards for fit() to see it."""
    backbone = backbone_of(model)
    if backbone is None:
        raise ValueError(f"{model.name} has no backbone to freeze")
    backbone.trainable = not frozen  # Keras sets every layer inside the same way
    if pretrained:
        keep_batchnorm_statistics(backbone)
