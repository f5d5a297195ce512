"""Split names as sources write them -> the names data build writes (train / val / test), and typos caught.

Sources spell splits many ways ('Training', 'valid', 'validation', 'dev', MIMIC's 'validate'); records of one
split must land in one file whatever the spelling, and a typo ('trian') must not quietly become a split file of
its own that no train or eval command reads. Other names ('holdout', 'fold1') are the user's and are kept.
"""

from __future__ import annotations

import difflib

from ..errors import UserError

STANDARD = ("train", "val", "test")
ALIASES = {"training": "train", "valid": "val", "validation": "val", "validate": "val", "dev": "val",
           "testing": "test"}


def alias(name: str) -> str:
    """``name`` lower case with the aliases joined ('Validation' -> 'val'); any other name as it is."""
    s = str(name).strip().lower()
    return ALIASES.get(s, s)


def standard_split(name: str, where: str) -> str:
    """``name`` as data build writes it: lower case, aliases joined; a near miss of a standard name is a
    UserError naming ``where`` (the source)."""
    s = alias(name)
    if s in STANDARD or s == "all":
        return s
    near = difflib.get_close_matches(s, [*STANDARD, *ALIASES], n=1, cutoff=0.75)
    if near:
        raise UserError(f"{where}: split {name!r} is not a split name (did you mean "
                        f"{ALIASES.get(near[0], near[0])!r}? splits: {', '.join(STANDARD)})")
    return s
