"""Stage `versions`: record the installed trainwell and the libraries behind its numbers, so an upgrade re-runs the stages."""

from __future__ import annotations

import json
from importlib import metadata, resources

import yaml

from trainwell import __version__
from trainwell.console import say, shown
from trainwell.errors import ParamsError
from trainwell.outputs import guard_stage, guarded, write_bytes_atomically
from trainwell.params import Params, load_params

# Distributions whose version can change a stage's output: decoding, resizing, training, metrics.
LIBRARIES = ("tensorflow", "tensorflow-io", "keras", "numpy", "opencv-python-headless", "pillow", "simplejpeg",
             "tifffile", "albumentations", "cleanlab", "scikit-learn", "scipy")


def installed_versions() -> dict[str, str]:
    """trainwell's version and each library's, or "not installed"; read from package metadata (no imports)."""
    versions = {"trainwell": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def stages_reading(keys: tuple[str, ...]) -> list[str]:
    """The pipeline's stages, in dvc.yaml's order, whose `params:` include any of the dotted `keys`."""
    pipeline = yaml.safe_load(resources.files("trainwell").joinpath("templates", "dvc.yaml.in").read_text("utf-8"))

    def reads(entry: str, key: str) -> bool:
        return key == entry or key.startswith(f"{entry}.") or entry.startswith(f"{key}.")

    def readers(key: str) -> set[str]:
        found = {name for name, stage in pipeline["stages"].items()
                 if any(reads(entry, key) for entry in stage.get("params", []) if isinstance(entry, str))}
        # A key no stage names (a typo) is reported by the stages that read the section it is in.
        return found or (readers(key.rpartition(".")[0]) if "." in key else set())

    wanted = set().union(*(readers(key) for key in keys))
    return [name for name in pipeline["stages"] if name in wanted]


def _checked_params(params_file: str) -> Params:
    """params.yaml, its mistakes said as params errors of the stages that read them, not of `versions`.

    `versions` is the first stage of every `dvc repro`, so it is the one that meets a typo meant
    for train or export; DVC then names it as the stage that failed.
    """
    try:
        return load_params(params_file)
    except ParamsError as exc:
        first, *others = stages_reading(exc.keys) or ["no stage"]
        then = f" (then {', '.join(others)})" if others else ""
        raise ParamsError(
            f"{exc.message.removesuffix(':')}, so no stage runs: `versions` checks the params of every stage first, "
            f"and these are read by {first}{then}. Fix params.yaml and run again:", details=exc.details, keys=exc.keys,
        ) from None


@guarded
def main(*, params_file: str = "params.yaml") -> int:
    params = _checked_params(params_file)
    guard_stage("versions", params=params, params_file=params_file)
    versions = installed_versions()
    write_bytes_atomically(params.paths.versions, (json.dumps(versions, indent=2) + "\n").encode())
    say(f"versions: trainwell {versions['trainwell']}, tensorflow {versions['tensorflow']}, "
        f"keras {versions['keras']} recorded in {shown(params.paths.versions)}")
    return 0
