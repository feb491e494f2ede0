"""The Keras tutorial's training script, with trainwell's network: end_to_end.py's baseline for `train`.

Usage: python benchmarks/tutorial_train.py TRAIN_DIR VAL_DIR MODEL_OUT [--test-dir DIR] [--epochs 15] [--image-size 48] [--learning-rate 1e-3]

What the Keras image-classification tutorial runs: image_dataset_from_directory, then
.cache().shuffle(1000).prefetch(AUTOTUNE), then model.fit with validation data, here with
trainwell's default network (Rescaling, Conv2D 16/16/32 with kernel 2 and max pooling, Dense 128,
softmax; Adam, batch 32; epochs, side and step size as trainwell's defaults unless given) so the two differ only in what surrounds the model. No seeds beyond
the loader's, no op determinism, no guard, no backup: what a user would otherwise run. Prints
which kernels TensorFlow runs (oneDNN on or off), Keras' line per epoch, "saved" once the model is on disk,
then the test accuracy.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_dir")
    parser.add_argument("val_dir")
    parser.add_argument("model_out")
    parser.add_argument("--test-dir")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args()
    import keras
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    # TensorFlow's own choice for this CPU (oneDNN on CPUs with AVX-512 VNNI/BF16 or AMX), or TF_ENABLE_ONEDNN_OPTS.
    print(f"kernels: oneDNN {'on' if _pywrap_util_port.IsMklEnabled() else 'off'}", flush=True)

    load = dict(image_size=(args.image_size, args.image_size), batch_size=32, label_mode="categorical")
    train = keras.utils.image_dataset_from_directory(args.train_dir, seed=0, **load)
    val = keras.utils.image_dataset_from_directory(args.val_dir, shuffle=False, **load)
    classes = len(train.class_names)
    train = train.cache().shuffle(1000).prefetch(tf.data.AUTOTUNE)
    val = val.cache().prefetch(tf.data.AUTOTUNE)
    layers: list = [keras.Input((args.image_size, args.image_size, 3)), keras.layers.Rescaling(1 / 255)]
    for filters in (16, 16, 32):
        layers += [keras.layers.Conv2D(filters, 2, activation="relu"), keras.layers.MaxPooling2D(2)]
    layers += [keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"),
               keras.layers.Dense(classes, activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=args.epochs, verbose=2)
    model.save(args.model_out)
    print("saved", flush=True)
    if args.test_dir:
        test = keras.utils.image_dataset_from_directory(args.test_dir, shuffle=False, **load)
        print(f"test accuracy {model.evaluate(test, verbose=0, return_dict=True)['accuracy']:.4f}", flush=True)


if __name__ == "__main__":
    main()
