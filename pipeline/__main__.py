"""`python -m pipeline` is the same as the `trainwell` command."""

from pipeline.cli import run

run()
