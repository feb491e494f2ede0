"""Project error types: each carries a message that says what went wrong and what to do, and its exit code."""

# Exit codes, the same for every command: 0 success, 1 a policy or check failed, 2 bad usage or
# params, 3 an internal error (a bug: the CLI prints one line and saves the traceback).
POLICY_EXIT = 1
USAGE_EXIT = 2
INTERNAL_ERROR_EXIT = 3


class TrainwellError(Exception):
    """Base for errors a user can act on; the CLI prints the message and exits non-zero.

    The message is one line. A list of problems (each params key that is wrong) goes in `details`,
    one item a line: the CLI prints each on its own line, so a newline inside a user string (a
    path, a key) is shown as an escape and never starts a line of its own.
    """

    exit_code = POLICY_EXIT

    def __init__(self, message: str = "", *, details: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__("\n  ".join([message, *details]) if details else message)
        self.message = message
        self.details = list(details)


class ParamsError(TrainwellError, ValueError):
    """params.yaml has an unknown, missing or mistyped key."""

    exit_code = USAGE_EXIT

    def __init__(self, message: str = "", *, details: list[str] | tuple[str, ...] = (),
                 keys: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message, details=details)
        self.keys = tuple(keys)  # the dotted keys found wrong, when a whole params file was checked


class UsageError(TrainwellError, ValueError):
    """The command was given something it cannot use (a path that does not exist, a folder outside git)."""

    exit_code = USAGE_EXIT


class DataError(TrainwellError, ValueError):
    """The dataset on disk cannot be used as configured."""


class ContractError(TrainwellError, ValueError):
    """The model, its loss and the labels disagree; training would fail or silently diverge."""


class ExportError(TrainwellError):
    """An exported model disagrees with the Keras model it came from beyond the configured bar."""
