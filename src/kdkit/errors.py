"""One error type for everything a user can get wrong.

The CLI catches `KdkitError` and prints its message on one line (no traceback unless --debug).
A message names the problem and the fix, e.g. "unknown dataset 'fashion_mnist'; did you mean 'fashion-mnist'?".
"""
import difflib


class KdkitError(Exception):
    """A user-facing error: bad input, missing data, mismatched models. Message = problem + fix."""


def did_you_mean(name: str, choices) -> str:
    """' did you mean 'x'?' for the closest choice, or ' choose from: a, b, c' when nothing is close."""
    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    shown = ", ".join(choices[:20]) + (", ..." if len(choices) > 20 else "")
    return f"choose from: {shown}"


def unknown(kind: str, name: str, choices) -> KdkitError:
    """KdkitError for an unknown registry name, with the closest valid one."""
    return KdkitError(f"unknown {kind} '{name}'; {did_you_mean(name, choices)}")
