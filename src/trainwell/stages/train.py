"""Stage `train`: contract check, then fit with the divergence guard; resume after a kill; never save a NaN model."""

from __future__ import annotations

from pathlib import Path

from trainwell.console import say, shown
from trainwell.data.cache import read_cache_manifest
from trainwell.outputs import guard_stage, guarded, protect_inputs, write_json
from trainwell.params import NO_WEIGHTS, load_params


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    guard_stage("train", params=params, params_file=params_file)
    if params.train.weights != NO_WEIGHTS:  # a backbone's weights file is read too
        protect_inputs(inputs=[params.train.weights])
    paths = params.paths
    read_cache_manifest(paths.cache_dir)  # a missing cache is said at once, not after TensorFlow's seconds of start-up
    from trainwell.training.backup import remove_backup
    from trainwell.training.fit import train_model, weights_are_finite
    from trainwell.training.guard import TrainingDiverged
    from trainwell.training.model_files import save_model_file

    incidents_file = Path(paths.train_report_dir) / "incidents.json"
    try:
        model, summary = train_model(
            cache_dir=paths.cache_dir, train=params.train, log_dir=paths.train_log_dir, backup_dir=paths.train_backup_dir
        )
    except TrainingDiverged as diverged:
        write_json(incidents_file, diverged.incidents)
        raise
    write_json(incidents_file, summary.incidents)
    if not weights_are_finite(model):
        raise TrainingDiverged(
            f"the trained weights contain NaN or Inf; the model was NOT saved. Lower train.learning_rate, "
            f"check the audit report, and see {shown(incidents_file)}"
        )
    save_model_file(model, paths.model)
    # The backup is trainwell's own scratch state, never user data: drop it once the model is safe.
    remove_backup(paths.train_backup_dir)
    say(
        f"train: epochs {summary.first_epoch + 1}-{summary.first_epoch + summary.epochs_run} over "
        f"{summary.train_images} training and {summary.val_images} validation images; "
        f"{len(summary.incidents)} guard incident(s); model saved to {shown(paths.model)}"
    )
    return 0
