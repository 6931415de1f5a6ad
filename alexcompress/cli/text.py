"""Text from files and users, made safe to print."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with control characters (newlines, escapes in file names) shown as escapes, never raw.

    >>> printable("a\\nb\\x1b[31m.pt")
    'a\\\\nb\\\\x1b[31m.pt'
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
