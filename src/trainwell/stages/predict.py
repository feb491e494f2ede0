"""Command `trainwell predict`: classify files, folders, a manifest or s3:// URLs with the trained model, refusing bad inputs by name."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from trainwell import storage
from trainwell.audit.target_checks import check_targets
from trainwell.console import json_for_logs, output_bytes, say, shown, warn
from trainwell.data.splits import CLASSES_FILE
from trainwell.data.targets import Targets, collect_targets
from trainwell.errors import UsageError
from trainwell.outputs import PATH_ENCODING, check_output, guarded, protect_inputs, write_bytes_atomically
from trainwell.params import Params, load_params
from trainwell.progress import progress_bar

FIELDS = ["path", "status", "class", "probability", "reason", "notes"]  # CSV; the runners-up after probability


def _valid_classes(classes: list[str], *, source: str) -> list[str]:
    """Class names a row can be reported with: none empty, none twice (either would shift or merge labels)."""
    if any(not name.strip() for name in classes):
        raise UsageError(f"{source} has an empty class name; every output of the model needs a name, in label order")
    repeated = sorted({name for name in classes if classes.count(name) > 1})
    if repeated:
        raise UsageError(f"{source} names the class {repeated[0]!r} more than once; each output needs its own name")
    return classes


def _classes(params: Params, given: str | None) -> list[str]:
    if given is not None:
        # Split on commas only, kept as written: dropping a blank name would shift every label after it.
        return _valid_classes([name.strip() for name in given.split(",")], source="--classes")
    path = Path(params.paths.splits_dir) / CLASSES_FILE
    try:
        classes = storage.read_json(path)
    except (OSError, ValueError):
        raise UsageError(f"the class names are read from '{path}' (written by `dvc repro split`), which is missing "
                         "or unreadable; run the pipeline first, or pass --classes a,b,c in label order") from None
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise UsageError(f"'{path}' does not hold a list of class names; run `dvc repro split` again")
    return _valid_classes(classes, source=f"'{path}'")


def _check_output(output: str | None) -> None:
    """Before any work: --output must be a place trainwell may write (outputs.check_output), which is
    none of what this run reads (protect_inputs: the images, the manifest, the model, the class list)."""
    if output is None:
        return
    if not output:
        raise UsageError("--output is empty; give a file name, or leave --output out to print to stdout")
    check_output(output, label="--output")


def _render(rows: list[dict], *, output_format: str) -> str:
    if output_format == "json":
        return json_for_logs(json.dumps(rows, indent=1)) + "\n"
    buffer = io.StringIO(newline="")
    # The runners-up in columns of their own (class_2, probability_2, ...), not JSON in one cell:
    # a spreadsheet sorts and filters them. The csv module quotes a name with a comma or a quote.
    ranks = max((len(row["top_k"]) for row in rows), default=1)
    extra = [name for rank in range(2, ranks + 1) for name in (f"class_{rank}", f"probability_{rank}")]
    fields = [*FIELDS[:4], *extra, *FIELDS[4:]]
    # Every text cell quoted: no row can start with "::", which a CI log would run as a workflow command.
    writer = csv.DictWriter(buffer, fieldnames=fields, quoting=csv.QUOTE_NONNUMERIC)
    writer.writeheader()
    for row in rows:
        flat = {key: value for key, value in row.items() if key != "top_k"}
        for rank, entry in enumerate(row["top_k"][1:], start=2):
            flat[f"class_{rank}"], flat[f"probability_{rank}"] = entry["class"], entry["probability"]
        writer.writerow({field: flat.get(field, "") for field in fields})
    return buffer.getvalue()


def _format_for(output: str | None, output_format: str | None) -> str:
    if output_format:
        return output_format
    return "json" if output and output.lower().endswith(".json") else "csv"


@guarded
def main(
    *,
    params_file: str = "params.yaml",
    paths: list[str],
    manifest: str | None = None,
    model_file: str | None = None,
    classes: str | None = None,
    output: str | None = None,
    output_format: str | None = None,
    top_k: int | None = None,
    allow_failures: bool = False,
    trust_model: bool = False,
) -> int:
    params = load_params(params_file)
    if not paths and not manifest:
        raise UsageError("nothing to classify: give image files, folders or s3:// URLs, or --manifest CSV")
    model_file = model_file or params.paths.model
    if not Path(model_file).is_file():
        raise UsageError(f"no model at '{model_file}'; run `dvc repro` first, or pass --model FILE")
    class_names = _classes(params, classes)
    targets = collect_targets(paths, manifest=manifest, extensions=params.data.extensions)
    classes_file = None if classes is not None else str(Path(params.paths.splits_dir) / CLASSES_FILE)
    protect_inputs(inputs=[params_file, model_file, manifest, classes_file], files=targets.locations)
    _check_output(output)
    if not targets.order:
        raise UsageError(f"no image files found in {', '.join(paths)[:300]} (extensions {params.data.extensions}; "
                         "hidden files are skipped); give image files or folders that hold them")
    from trainwell.training.model_files import load_model_file
    from trainwell.training.predict import check_prediction_model, non_probability_rows, predict_files
    from trainwell.training.predict import top_k as ranked

    model = load_model_file(model_file, trust=trust_model, compile=False)
    check_prediction_model(model, classes=class_names)
    accepted, refused, notes, digests = check_targets(targets, policy=params.audit)
    bar = progress_bar(total=len(accepted), description="predict")
    try:
        probabilities, failures = predict_files(
            model=model, locations=[targets.locations[position] for position in accepted],
            max_pixels=params.audit.max_pixels, batch_size=params.predict.batch_size,
            report=lambda done: bar.update(done - bar.n), digests=[digests[position] for position in accepted])
    finally:
        bar.close()
    refused.update({accepted[index]: reason for index, reason in failures.items()})
    refused.update(non_probability_rows(probabilities, accepted))
    ranking = ranked(probabilities, classes=class_names, k=top_k or params.predict.top_k)
    rows = _rows(targets, accepted=accepted, refused=refused, notes=notes, ranking=ranking)
    rendered = _render(rows, output_format=_format_for(output, output_format)).encode(**PATH_ENCODING)
    if output:
        write_bytes_atomically(output, rendered)
    else:
        output_bytes(rendered)
    return _summarise(rows, targets=targets, refused=refused, allow_failures=allow_failures, output=output)


def _rows(targets: Targets, *, accepted: list[int], refused: dict[int, str], notes: dict[int, str],
          ranking: list[list[tuple[str, float]]]) -> list[dict]:
    """One row per input in the order given: refused ones (missing, special, failing a check) included."""
    rows: list[dict[str, Any]] = []
    ranked = dict(zip(accepted, ranking))
    for listed, position in targets.order:
        if not listed:
            finding = targets.refused[position]
            rows.append({"path": finding.path, "status": "refused", "class": "", "probability": "", "top_k": [],
                         "reason": shown(f"{finding.kind}: {finding.detail}"), "notes": ""})
            continue
        name = targets.names[position]
        if position in refused:
            rows.append({"path": name, "status": "refused", "class": "", "probability": "", "top_k": [],
                         "reason": shown(refused[position]), "notes": ""})
            continue
        top = ranked[position]
        rows.append({"path": name, "status": "ok", "class": top[0][0], "probability": round(top[0][1], 6),
                     "top_k": [{"class": label, "probability": round(value, 6)} for label, value in top],
                     "reason": "", "notes": notes.get(position, "")})
    return rows


def _summarise(rows: list[dict], *, targets: Targets, refused: dict[int, str], allow_failures: bool,
               output: str | None) -> int:
    refusals = [row for row in rows if row["status"] == "refused"]
    kinds = Counter(row["reason"].split(":", 1)[0] for row in refusals)
    classified = len(rows) - len(refusals)
    where = f" to {shown(output)}" if output else ""
    # With the results on stdout, the summary goes to stderr so the CSV or JSON stays parseable.
    (say if output else warn)(f"predict: classified {classified} of {len(rows)} inputs{where}"
        + (f"; {targets.ignored} files skipped (hidden, or not an image extension)" if targets.ignored else ""))
    if refusals:
        warn(f"predict: refused {len(refusals)} ({', '.join(f'{kind} {count}' for kind, count in kinds.most_common())});"
             " see their rows' reason column")
        if not allow_failures:
            warn("predict: exit 1 because inputs were refused (--allow-failures exits 0 when some are classified)")
            return 1
    return 0 if classified else 1
