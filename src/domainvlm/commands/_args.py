"""argparse types for numeric options: a bad value stops at parse time with one line naming the option
(``argument --batch-size: must be at least 1, got 0``), before any model is loaded or file written."""

from __future__ import annotations

import argparse


def _number(kind, lo=None, hi=None, lo_open=False, what=None):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if v != v or (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return v

    return parse


positive_int = _number(int, 1, what="at least 1")
nonneg_int = _number(int, 0, what="0 or more")
nonneg_float = _number(float, 0.0, what="0 or more")
positive_float = _number(float, 0.0, lo_open=True, what="above 0")
top_p = _number(float, 0.0, 1.0, lo_open=True, what="in (0, 1]")
