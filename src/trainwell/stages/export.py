"""Stage `export`: SavedModel (encoded image bytes in) and TFLite float16/int8, each checked against Keras on the test split."""

from __future__ import annotations

import shutil
from pathlib import Path

from trainwell.console import say, shown, warn
from trainwell.data.cache import open_split, read_cache_manifest
from trainwell.errors import DataError
from trainwell.outputs import fresh_staging_dir, guard_stage, guarded, replace_generated_dir, write_json
from trainwell.params import Params, load_params

PARITY_FILE = "parity.json"  # written last: also the marker that the folder is ours (outputs.replace_generated_dir)


def _bars(params: Params) -> dict[str, float]:
    return {"float16": params.export.min_agreement_float16, "int8": params.export.min_agreement_int8,
            "encoded": params.export.min_agreement_encoded}


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
    from trainwell.training.export import (
        SAVED_MODEL,
        TFLITE_FILES,
        bars_missed,
        measure_parity,
        representative_images,
        tflite_models,
        write_saved_model,
    )
    from trainwell.training.model_files import load_model_file
    from trainwell.training.served_limits import served_limits

    model = load_model_file(params.paths.model, compile=False)
    train = open_split(cache_dir=params.paths.cache_dir, split="train")
    final = Path(params.paths.export_dir)
    staging = fresh_staging_dir(final, marker=PARITY_FILE)
    staging.mkdir(parents=True)
    try:
        write_saved_model(model=model, classes=train.classes, path=staging / SAVED_MODEL, limits=served_limits(params))
        representative = (representative_images(train, params.export.representative_images)
                          if params.export.int8 == "full_integer" else None)
        tflite = tflite_models(model=model, int8_mode=params.export.int8, representative=representative)
        for kind, content in tflite.items():
            (staging / TFLITE_FILES[kind]).write_bytes(content)
        results = measure_parity(model=model, saved_model_dir=staging / SAVED_MODEL, tflite=tflite,
                                 cache_dir=params.paths.cache_dir, data_dir=params.data.dir,
                                 max_pixels=params.audit.max_pixels, tie_margin=params.export.tie_margin)
        misses = bars_missed(results, bars=_bars(params))
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
