"""One error type for everything a user can get wrong.

The CLI catches `KdkitError` and prints its message on one line (no traceback unless --debug).
A message names the problem and the fix, e.g. "unknown dataset 'fashion_mnist'; did you mean 'fashion-mnist'?".
"""
import difflib
import reprlib


class KdkitError(Exception):
    """A user-facing error: bad input, missing data, mismatched models. Message = problem + fix."""


_SHORT = reprlib.Repr()  # bounded: a nested list of a million items is never built as text
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlong, _SHORT.maxlevel = 40, 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4


def shown(value) -> str:
    """repr(value) cut to at most 60 characters: a message never echoes a huge or multi-line value."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # an int of over 4300 digits, or an object whose __repr__ fails: say what it is
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def did_you_mean(name: str, choices) -> str:
    """' did you mean 'x'?' for the closest choice, or ' choose from: a, b, c' when nothing is close."""
    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    shown_choices, width = [], 0
    for choice in choices:  # at most about 150 characters of them: the message stays one short line
        width += len(choice) + 2
        if width > 150:
            break
        shown_choices.append(choice)
    more = ", ..." if len(shown_choices) < len(choices) else ""
    return f"choose from: {', '.join(shown_choices)}{more}"


def unknown(kind: str, name: str, choices) -> KdkitError:
    """KdkitError for an unknown registry name, with the closest valid one."""
    return KdkitError(f"unknown {kind} {shown(str(name))}; {did_you_mean(name, choices)}")
