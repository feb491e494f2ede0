"""The `trainwell` command: one subcommand per pipeline stage, plus a standalone audit and doctor."""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.errors import TrainwellError

DESCRIPTION = """\
trainwell: audited data, a GPU-feeding input pipeline and a classifier that cannot silently diverge.

Inside a DVC project the stages run in order with `dvc repro`; each subcommand here is one
stage and reads its settings from params.yaml (see --params). Exit codes: 0 success,
1 a policy or check failed (the message says what to fix), 2 bad usage or params.
"""

STAGES = {
    "demo-data": ("pipeline.demo_data", "write the deterministic synthetic five-class demo set"),
    "split": ("pipeline.split", "seeded, stratified train/val/test lists, leaving quarantined files out"),
    "build": ("pipeline.build", "decode and resize every image once into the uint8 training cache"),
    "train": ("pipeline.train", "check the model contract, then train; never saves a model with NaN weights"),
    "evaluate": ("pipeline.evaluate", "test-split accuracy, per-class precision/recall/F1, confusion matrix"),
    "label-review": ("pipeline.label_review", "k-fold out-of-fold predictions ranked by cleanlab into likely "
                     "label errors; never relabels a file"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainwell", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=description or help_text)
        command.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
        return command

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
                            "changed files are decoded (the DVC stage uses paths.audit_cache)")
    for name, (_, help_text) in STAGES.items():
        add(name, help_text)
    doctor = add("doctor", "check that model head, loss and labels agree, without training",
                 "Run the model contract check against the labels in the build cache: catches a sigmoid "
                 "head with categorical_crossentropy, width/class mismatches, from_logits mistakes.")
    gate = add("gate", "compare metrics with thresholds and a git revision; exit 1 on a miss",
               "Check metrics/*.json against gate.checks in params.yaml: absolute bars (min/max) and, with a "
               "baseline revision, how far each metric may drop or rise compared with that revision "
               "(e.g. --baseline main in a pull request). Prints a table; exit 1 when any check fails.")
    plots = add("plots", "dvc plots show as a page that renders offline (vega inlined)",
                "Run `dvc plots show` with an HTML template that inlines vega, vega-lite and vega-embed "
                "(fetched once from the npm registry with `npm pack` and cached), so the page renders "
                "in a browser with no network.")
    plots.add_argument("--out", default="dvc_plots", help="output folder (default: %(default)s)")
    gate.add_argument("--baseline", metavar="REV", help="git revision to compare with (default: gate.baseline)")
    gate.add_argument("--format", choices=["text", "json"], default="text", help="(default: %(default)s)")
    doctor.add_argument("--model", dest="model_file", help="a compiled .keras file of your own (default: the model params describe)")
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter (CUDA probes on a CPU machine) buries the messages that
    # matter; real failures still reach Python as exceptions. Set the variable to see it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "audit":
            from pipeline import audit

            return audit.main(params_file=args.params, path=args.path, output_format=args.format, html_file=args.html_file,
                              cache_file=args.cache_file)
        if args.command == "plots":
            from pipeline import plots as plots_module

            return plots_module.main(out=args.out)
        if args.command == "gate":
            from pipeline import gate

            return gate.main(params_file=args.params, baseline=args.baseline, output_format=args.format)
        if args.command == "doctor":
            from pipeline import doctor

            return doctor.main(params_file=args.params, model_file=args.model_file)
        module_name = STAGES[args.command][0]
        module = __import__(module_name, fromlist=["main"])
        return module.main(params_file=args.params)
    except TrainwellError as exc:
        print(f"trainwell {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def run(argv: list[str] | None = None) -> None:
    """Console entry point: main()'s status as the exit code, safely after object-store I/O."""
    from pipeline.storage import exit_process

    exit_process(main(argv))

