"""JSON from files the tool did not write itself (a `.dcz` header, sensitivity curves): strict and bounded.

One rule for every reader: UTF-8 text, nesting no deeper than a limit (checked before `json.loads`
recurses: a deeply nested document overflows the parser's stack), and no NaN or Infinity literals (a
number too large for a float, 1e999, comes out infinite: the callers check finiteness field by field).
"""

from __future__ import annotations

import json
import re
from typing import Any

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def nesting(raw: bytes) -> int:
    """How deep arrays and objects nest in `raw` (brackets inside strings do not count).

    >>> nesting(b'{"a": [1, [2, "]]]"]], "b": {}}')
    3
    """
    import numpy as np

    bare = np.frombuffer(_STRINGS.sub(b'""', raw), dtype=np.uint8)
    steps = np.isin(bare, (ord("["), ord("{"))).astype(np.int64) - np.isin(bare, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def loads(raw: bytes, max_depth: int) -> Any:
    """The document in `raw`; a ValueError saying what is wrong with it otherwise.

    >>> loads(b'{"x": [1.5, 2]}', max_depth=4)
    {'x': [1.5, 2]}
    >>> loads(b'[NaN]', max_depth=4)
    Traceback (most recent call last):
    ...
    ValueError: not valid JSON (NaN is not allowed)
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    depth = nesting(raw)
    if depth > max_depth:
        raise ValueError(f"JSON nested {depth} deep, more than {max_depth}")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    except RecursionError:  # unreachable after the depth check; kept as the parser's own guard
        raise ValueError("JSON nested too deeply") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")
