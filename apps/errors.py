"""Errors the CLI reports as one line (exit code 2 for bad usage)."""


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""
