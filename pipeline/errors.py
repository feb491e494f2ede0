"""Project error types: each carries a message that says what went wrong and what to do."""


class TrainwellError(Exception):
    """Base for errors a user can act on; the CLI prints the message and exits non-zero."""

    exit_code = 1


class ParamsError(TrainwellError, ValueError):
    """params.yaml has an unknown, missing or mistyped key."""

    exit_code = 2


class DataError(TrainwellError, ValueError):
    """The dataset on disk cannot be used as configured."""


class ContractError(TrainwellError, ValueError):
    """The model, its loss and the labels disagree; training would fail or silently diverge."""
