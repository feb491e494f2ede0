"""The `trainwell` command: one subcommand per pipeline stage, plus init, a standalone audit, doctor, gate and plots."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import traceback
from typing import NoReturn

from trainwell import __version__
from trainwell.console import (
    NORMAL,
    QUIET,
    VERBOSE,
    closed_pipes_dropped,
    detail,
    error,
    set_verbosity,
    shown,
    silence_closed_pipes,
)
from trainwell.errors import INTERNAL_ERROR_EXIT, TrainwellError, UsageError
from trainwell.keras_startup import start_keras_without_optional_integrations
from trainwell.params import DEFAULT_PARAMS_FILE
from trainwell.stopping import Stopped, stop_on_signals, stop_with_dvc

DESCRIPTION = """\
trainwell: audited data, a GPU-feeding input pipeline and a classifier that cannot silently diverge.

Start a project with `trainwell init` in a git repository; then `dvc repro` runs the stages in
order. Each subcommand here is one stage and reads its settings from params.yaml (see --params).

Exit codes: 0 success, 1 a policy or check failed (the message says what to fix), 2 bad usage
or params, 3 an internal error (a bug in trainwell: the message says where the traceback is).
"""

# command -> (stage module under trainwell.stages, one-line help)
STAGES = {
    "versions": ("versions", "record the installed trainwell, TensorFlow, Keras ... versions; every stage depends "
                 "on them, so an upgrade re-runs what it could change"),
    "demo-data": ("demo_data", "write the deterministic synthetic five-class demo set"),
    "split": ("split", "seeded, stratified train/val/test lists, leaving quarantined files out"),
    "build": ("build", "decode and resize every image once into the uint8 training cache"),
    "train": ("train", "check the model contract, then train; never saves a model with NaN weights"),
    "evaluate": ("evaluate", "test-split accuracy, per-class precision/recall/F1, confusion matrix"),
    "export": ("export", "SavedModel (encoded image bytes in) and TFLite float16/int8, each checked against "
               "the Keras model on the test split; warns when agreement misses export.min_agreement_*"),
    "card": ("card", "write the model card (models/card.md and .json) from the pipeline's outputs"),
    "label-review": ("label_review", "k-fold out-of-fold predictions on every split, ranked by cleanlab into "
                     "likely label errors and outliers; never relabels a file"),
    "report": ("report", "write the report site (reports/index.html: headline numbers, the gate's verdict, a page "
               "per stage, charts as static SVG) from the other stages' outputs"),
}


def _verbosity_flags(parser: argparse.ArgumentParser, *, default: object) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=QUIET, default=default,
                       help="print errors only")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=VERBOSE, default=default,
                       help="print more detail, TensorFlow's own log lines included")


class _Parser(argparse.ArgumentParser):
    """argparse, with what the user typed shown as escapes in its errors."""

    def error(self, message: str) -> NoReturn:
        # argparse puts unrecognised arguments in the message as typed: a newline in one would split the line.
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {shown(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trainwell", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"trainwell {__version__}")
    _verbosity_flags(parser, default=NORMAL)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, description: str | None = None, *, params: bool = True) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=description or help_text)
        if params:
            command.add_argument("--params", default=None, metavar="FILE",
                                 help="params file (default: params.yaml; when that is absent, every default)")
        # SUPPRESS: a flag given before the command is not reset by the sub-command's default.
        _verbosity_flags(command, default=argparse.SUPPRESS)
        return command

    init = add(
        "init",
        "start a trainwell project: dvc.yaml, a commented params.yaml, .gitignore entries",
        "Set up a trainwell project in DIR (default: the current folder), which must be inside a git "
        "repository: runs `dvc init` if needed, writes dvc.yaml and a commented params.yaml, and adds "
        "the generated paths to .gitignore. Existing dvc.yaml or params.yaml are never overwritten "
        "(the command stops and says so). Then: `dvc repro`. With --ci github it also writes "
        ".github/workflows/trainwell.yml, a pull-request workflow: install (requirements.txt when there is "
        "one), `dvc pull` when a DVC remote is configured, `dvc repro`, the audit's findings as annotations, "
        "`trainwell gate --baseline` the base branch, the metrics diff as a comment, the report site as an "
        "artifact. In a project init already set up, --ci writes only the workflow; an existing workflow "
        "file is never overwritten (exit 2).",
        params=False,
    )
    init.add_argument("directory", nargs="?", default=".", metavar="DIR", help="project folder (default: .)")
    init.add_argument("--data", metavar="PATH",
                      help="your dataset: a folder with one sub-folder per class (default: the embedded demo set)")
    init.add_argument("--ci", choices=["github"],
                      help="also write a CI workflow for pull requests (github: .github/workflows/trainwell.yml)")
    audit = add(
        "audit",
        "decode every image with the training decoder and report problems",
        "Audit a folder with one sub-folder per class. Without PATH this is the DVC stage: it audits "
        "data.dir from params and writes the report, metrics and quarantine list. With PATH it only "
        "prints. Exit 0 when the policy in params (audit.fail_on) holds, 1 when it is violated.",
    )
    audit.add_argument("path", nargs="?", help="dataset folder to audit on its own (no files written)")
    audit.add_argument("--format", choices=["text", "json", "github"], default="text",
                       help="text for people, json for tools, github for Actions annotations (default: %(default)s)")
    audit.add_argument("--html", dest="html_file", metavar="FILE",
                       help="also write a self-contained HTML page with thumbnails of flagged files "
                            "(the DVC stage always writes paths.audit_html)")
    audit.add_argument("--cache", dest="cache_file", metavar="FILE",
                       help="reuse per-file results stored in FILE from an earlier audit, so only new or "
                            "changed files are decoded; FILE and FILE.npy are (re)written, and must be new "
                            "or a trainwell cache: any other file there is refused, never overwritten "
                            "(the DVC stage uses paths.audit_cache)")
    for name, (_, help_text) in STAGES.items():
        add(name, help_text)
    doctor = add("doctor", "check that model head, loss and labels agree, without training",
                 "Run the model contract check against the labels in the build cache: catches a sigmoid "
                 "head with categorical_crossentropy, width/class mismatches, from_logits mistakes.")
    doctor.add_argument("--model", dest="model_file", help="a compiled .keras file of your own (default: the model params describe)")
    doctor.add_argument("--trust-model", action="store_true",
                        help="DANGEROUS: also load .h5 and SavedModel files, and .keras files with safe_mode off; "
                             "these can run code stored in the file. Only for files you made yourself")
    gate = add("gate", "compare metrics with thresholds and a git revision; exit 1 on a miss",
               "Check metrics/*.json against gate.checks in params.yaml: absolute bars (min/max) and, with a "
               "baseline revision, how far each metric may drop or rise compared with that revision "
               "(e.g. --baseline main in a pull request). Prints a table; exit 1 when any check fails.")
    gate.add_argument("--baseline", metavar="REV", help="git revision to compare with (default: gate.baseline)")
    gate.add_argument("--format", choices=["text", "json"], default="text", help="(default: %(default)s)")
    predict = add(
        "predict",
        "classify image files, folders, a manifest or s3:// URLs with the trained model",
        "Classify images with the trained model (paths.model), decoding and resizing them with the very code "
        "`build` used for training. Every input is first checked as the audit checks a file: a missing, "
        "corrupt, truncated, NaN-carrying, oversized or special file is refused and reported by path and "
        "reason, never guessed at. Writes CSV (or JSON) with the class, its probability and the top-k "
        "classes, to stdout or --output. Exit 0 when every input was classified, 1 when any was refused "
        "(unless --allow-failures), 2 for bad usage.",
    )
    predict.add_argument("paths", nargs="*", metavar="PATH",
                         help="image files, folders (searched recursively for data.extensions) or s3:// URLs")
    predict.add_argument("--manifest", metavar="CSV",
                         help="a CSV with a `path` column, paths relative to the CSV's folder")
    predict.add_argument("--model", dest="model_file", metavar="FILE", help="a .keras model (default: paths.model)")
    predict.add_argument("--classes", metavar="A,B,...",
                         help="class names in label order (default: data/splits/classes.json from the pipeline)")
    predict.add_argument("--output", "-o", metavar="FILE", help="write here (atomically) instead of stdout")
    predict.add_argument("--format", dest="output_format", choices=["csv", "json"],
                         help="default: json for an --output ending in .json, else csv")
    predict.add_argument("--top-k", type=int, metavar="K", help="classes listed per image (default: predict.top_k)")
    predict.add_argument("--allow-failures", action="store_true",
                         help="exit 0 when some inputs were refused (they are still listed with their reason)")
    predict.add_argument("--trust-model", action="store_true",
                         help="DANGEROUS: load a model file that may run code (see `trainwell doctor --help`)")
    plots = add("plots", "DVC's plots as static SVG in one page that renders offline",
                "Draw the plots dvc.yaml declares (curves, confusion matrix, reliability, F1 per class) as static "
                "SVG in OUT/index.html: no script, no network, no Node.js. With revisions (git branches, tags, "
                "commits or experiment names) their plots are drawn together, as `dvc plots diff` would. "
                "`dvc repro` also writes the report site, reports/index.html, with the same figures explained.",
                params=False)
    plots.add_argument("revisions", nargs="*", metavar="REV", help="revisions to compare (default: the workspace)")
    plots.add_argument("--out", default="dvc_plots", help="output folder (default: %(default)s)")
    return parser


def _stage(name: str):
    # Stages are loaded by name: the CLI is the one place that reaches them (see ARCHITECTURE.md).
    return importlib.import_module(f"trainwell.stages.{name}")


def dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "params", "") is None:
        args.params = DEFAULT_PARAMS_FILE
        if os.path.lexists(DEFAULT_PARAMS_FILE) and not os.path.isfile(DEFAULT_PARAMS_FILE):
            # Only an absent params.yaml means "all defaults"; a dangling link or a folder is a mistake.
            raise UsageError(f"'{DEFAULT_PARAMS_FILE}' here is not a readable file (a dangling link or a folder); "
                             "fix it, or pass --params FILE")
    elif getattr(args, "params", None) and not os.path.isfile(args.params):
        # Only the default may be missing (it means "all defaults"): a named file that is not
        # there is a typo, and running on defaults would overwrite the user's outputs.
        raise UsageError(f"params file '{args.params}' does not exist; check the --params path")
    detail(f"trainwell {__version__}: {args.command} with params from {shown(getattr(args, 'params', '-'))}")
    if args.command == "init":
        return _stage("init").main(directory=args.directory, data=args.data, ci=args.ci)
    if args.command == "audit":
        return _stage("audit").main(params_file=args.params, path=args.path, output_format=args.format,
                                    html_file=args.html_file, cache_file=args.cache_file)
    if args.command == "plots":
        return _stage("plots").main(out=args.out, revisions=args.revisions)
    if args.command == "gate":
        return _stage("gate").main(params_file=args.params, baseline=args.baseline, output_format=args.format)
    if args.command == "predict":
        if args.top_k is not None and args.top_k < 1:
            raise UsageError(f"--top-k must be 1 or more, not {args.top_k}")
        return _stage("predict").main(params_file=args.params, paths=args.paths, manifest=args.manifest,
                                      model_file=args.model_file, classes=args.classes, output=args.output,
                                      output_format=args.output_format, top_k=args.top_k,
                                      allow_failures=args.allow_failures, trust_model=args.trust_model)
    if args.command == "doctor":
        return _stage("doctor").main(params_file=args.params, model_file=args.model_file,
                                     trust_model=args.trust_model)
    return _stage(STAGES[args.command][0]).main(params_file=args.params)


def _save_traceback() -> str:
    """Write the current traceback to a new file of its own; return its path (or why it could not be saved)."""
    try:
        handle, path = tempfile.mkstemp(prefix=f"trainwell-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as stream:
            stream.write(f"trainwell {__version__}, command: {sys.argv!r}\n\n")
            traceback.print_exc(file=stream)
        return path
    except Exception as exc:  # the crash report must never become a second crash
        return f"(not saved: {type(exc).__name__}: {exc})"


# The status of a command whose output pipe closed under a write trainwell does not make itself
# (a library's print): 128 + SIGPIPE, what a shell reports for a tool the signal stopped. Output
# trainwell writes itself never gets here: it is dropped, and the command finishes with its own status.
CLOSED_PIPE_EXIT = 141


def main(argv: list[str] | None = None) -> int:
    with closed_pipes_dropped():  # `trainwell ... | head`: the reader going away is not an error
        return _main(argv)


def set_tensorflow_defaults(*, quiet: bool) -> None:
    """TensorFlow's environment as trainwell runs it, unless the user set it: read once, when TF is imported."""
    # TensorFlow's C++ start-up chatter (CUDA probes on a CPU machine) buries the messages that
    # matter; real failures still reach Python as exceptions. -v (or the variable) shows it.
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN's CPU kernels: TensorFlow turns them on by itself only on CPUs with the newer deep-learning
    # instructions (AVX-512 VNNI or BF16, AMX); elsewhere (an AVX2 AMD EPYC here) its slower Eigen
    # kernels run. Measured on that 2-core EPYC: the demo network's
    # epoch 1.42 -> 0.87 s at 48x48, and reruns stay bit-identical under op determinism (the same
    # model file, byte for byte; tests/test_train.py). TF_ENABLE_ONEDNN_OPTS=0 keeps them off.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    set_verbosity(args.verbosity)
    set_tensorflow_defaults(quiet=args.verbosity < VERBOSE)
    try:
        return dispatch(args)
    except TrainwellError as exc:
        # One line for the message, one for each detail: a newline inside a path never starts a line.
        error("\n  ".join([f"trainwell {args.command}: error: {shown(exc.message)}",
                           *(shown(line) for line in exc.details)]))
        return exc.exit_code
    except (KeyboardInterrupt, Stopped) as exc:
        # Outputs are whole or absent (outputs.write_atomically); train's epoch backup is kept, so
        # running it again resumes after the last finished epoch.
        name = "SIGTERM" if isinstance(exc, Stopped) else "Ctrl-C"
        error(f"trainwell {args.command}: stopped by {name}; what was written is whole"
              f"{', and running it again resumes from its last epoch backup' if args.command == 'train' else ''}")
        return 143 if isinstance(exc, Stopped) else 130
    except Exception as exc:  # the last line of defence: a bug must never read as "policy violated"
        if isinstance(exc, BrokenPipeError) and silence_closed_pipes():
            return CLOSED_PIPE_EXIT  # a closed stdout or stderr met outside console's writers: not a bug
        saved = _save_traceback()
        error(f"trainwell {args.command}: internal error (a bug in trainwell, please report it): "
              f"{type(exc).__name__}: {shown(str(exc)[:300])}; full traceback in {shown(saved)}")
        return INTERNAL_ERROR_EXIT


def run(argv: list[str] | None = None) -> None:
    """Console entry point: main()'s status as the exit code, safely after object-store I/O."""
    from trainwell.storage import exit_process

    # Only a process of its own: a caller of main() (a test, a notebook) keeps its signal handlers, and
    # its Keras keeps the scikit-learn, pandas and matplotlib integrations it may use.
    stop_on_signals()
    stop_with_dvc()  # a killed `dvc repro` takes its stage's command with it
    # Keras imports those three at start-up when installed; commands use none of them through Keras:
    # about 2 s of the 7 that starting TensorFlow took (keras_startup).
    start_keras_without_optional_integrations()
    exit_process(main(argv))
