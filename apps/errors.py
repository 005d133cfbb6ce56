"""Errors the CLI reports as one line (exit code 2 for bad usage)."""
from realtime.errors import AedError


class UserError(AedError):
    """Bad input from the user: printed as one line, exit code 2."""
