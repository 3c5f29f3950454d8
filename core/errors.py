"""Error types whose messages are shown to users as-is (one line, says what to fix)."""


class AelstmError(Exception):
    """Base class for errors the CLIs report as one line, exiting with `exit_code` (no traceback)."""

    exit_code: int = 1


class DataError(AelstmError, ValueError):
    """Input data is missing, malformed or does not fit the model."""


class BundleError(AelstmError):
    """A model bundle is missing, corrupt or does not match what the caller expects."""
