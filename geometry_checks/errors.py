"""The one error type for bad input: the CLI and the pytest plugin turn it into one line."""


class InputError(Exception):
    """Bad input from the user (a file, a model directory, a baseline, hidden states).

    Its message is a complete one-line explanation; callers print it without a traceback.
    """
