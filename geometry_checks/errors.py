"""The one error type for bad input: the CLI and the pytest plugin turn it into one line."""


class InputError(Exception):
    """Bad input from the user (a file, a model directory, a baseline, hidden states).

    Its message is a complete one-line explanation; callers print it without a traceback.
    """


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none): what a
    one-line error quotes of a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
