"""The two kinds of error actstats raises on purpose.

The CLI turns them into one ``Error: ...`` line: a ``ConfigError`` is a usage error (exit 2), a
``RunError`` a failure of a valid request (exit 1). Anything else is a bug.
"""

import difflib


class ConfigError(ValueError):
    """Bad input the user can fix: an unknown name, a value out of range, a malformed spec."""


class RunError(RuntimeError):
    """A valid request that could not be carried out (a file that cannot be written, ...)."""


def did_you_mean(word: str, choices) -> str:
    """`"; did you mean 'xavier'?"` when a close match exists, else the list of valid values."""
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return "; valid values: " + ", ".join(choices) + "."


def show(text) -> str:
    """User text made safe for a one-line message: control and invisible characters escaped."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
