"""`python -m trainwell` is the same as the `trainwell` command."""

from trainwell.cli import run

run()
