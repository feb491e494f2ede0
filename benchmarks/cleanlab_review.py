"""The ~20-line label review a practitioner writes: end_to_end.py's baseline for `label_review`.

Usage: python benchmarks/cleanlab_review.py DATA_DIR OUT_CSV [--image-size 28] [--epochs 5] [--folds 5]

Every image of DATA_DIR/<class>/ at its native size, 5-fold stratified out-of-fold probabilities
of a small Keras CNN (trainwell's default network: Conv2D 16/16/32 with kernel 2, Dense 128,
softmax; Adam at Keras' default 1e-3, batch 32, 5 epochs), ranked by cleanlab's
find_label_issues. Writes the flagged files (paths relative to DATA_DIR), most suspicious first.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("out_csv")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    import keras
    import numpy as np
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold

    data = keras.utils.image_dataset_from_directory(args.data_dir, image_size=(args.image_size, args.image_size),
                                                    batch_size=256, shuffle=False, label_mode="int")
    images = np.concatenate([batch.numpy() for batch, _ in data])
    labels = np.concatenate([batch.numpy() for _, batch in data])
    probabilities = np.zeros((len(labels), len(data.class_names)), np.float32)
    for train, held_out in StratifiedKFold(args.folds, shuffle=True, random_state=0).split(images, labels):
        layers: list = [keras.Input(images.shape[1:]), keras.layers.Rescaling(1 / 255)]
        for filters in (16, 16, 32):
            layers += [keras.layers.Conv2D(filters, 2, activation="relu"), keras.layers.MaxPooling2D(2)]
        layers += [keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"),
                   keras.layers.Dense(len(data.class_names), activation="softmax")]
        model = keras.Sequential(layers)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(images[train], labels[train], epochs=args.epochs, verbose=0)
        probabilities[held_out] = model.predict(images[held_out], verbose=0)
    issues = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    with open(args.out_csv, "w") as out:
        out.write("path\n" + "".join(os.path.relpath(data.file_paths[index], args.data_dir) + "\n"
                                     for index in issues))


if __name__ == "__main__":
    main()
