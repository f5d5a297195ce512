"""`train --help` and `train-expert --help` list every config field with its default and a description, read
from the dataclasses' own comments, so the help cannot drift from the code."""

from __future__ import annotations

import dataclasses

import pytest

from domainvlm.cli import main
from domainvlm.config import field_docs
from domainvlm.train.config import TrainConfig
from domainvlm.domains.wafer.expert_config import ExpertConfig


def leaves(obj, prefix=""):
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from leaves(v, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", v, field_docs(type(obj))[f.name]


@pytest.mark.parametrize("cmd,cls", [("train", TrainConfig), ("train-expert", ExpertConfig)])
def test_help_lists_every_field_with_default_and_description(cmd, cls, capsys):
    assert main([cmd, "--help"]) == 0
    out = capsys.readouterr().out
    rows = list(leaves(cls()))
    assert len(rows) > 20
    for name, default, doc in rows:
        assert doc, f"{cls.__name__}.{name} has no description comment"
        shown = (default or "''") if isinstance(default, str) else repr(default)
        assert f"  {name}={shown}" in out, name
        assert " ".join(doc.split()[:4]) in " ".join(out.split()), name


def test_field_docs_reads_trailing_continued_and_group_comments():
    @dataclasses.dataclass
    class C:
        a: int = 1            # first field
        b: str = "x"          # a long comment that
        #                       goes on here
        # shared note for the next two
        c: bool = False
        d: float = 0.0

        e: int = 2            # own

    d = field_docs(C)
    assert d == {"a": "first field", "b": "a long comment that goes on here", "c": "shared note for the next two",
                 "d": "shared note for the next two", "e": "own"}
