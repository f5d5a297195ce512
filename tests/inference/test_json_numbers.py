"""json_schema numbers: every admitted prefix can still be completed within the limits, so a constrained decode
never ends in invalid JSON reported as 'stop' (seen: '{"yield_pct": -2018...E-' with finish_reason stop)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from domainvlm.inference.json_constraint import (MAX_DIGITS, MAX_NUMBER_CHARS, JsonLogits, SchemaError,
                                                 check_schema, state)

NUM = {"type": "object", "properties": {"y": {"type": "number"}, "n": {"type": "integer"}},
       "required": ["y", "n"], "additionalProperties": False}


@pytest.mark.parametrize("text,want", [
    ('{"y": -2018', "partial"), ('{"y": 1.5E-', "partial"), ('{"y": 1.5E-3, "n": 2}', "complete"),
    ('{"y": ' + "1" * MAX_DIGITS, "partial"), ('{"y": ' + "1" * (MAX_DIGITS + 1), "invalid"),
    ('{"y": ' + "1" * MAX_DIGITS + ".", "invalid"),  # no fraction digit would fit
    ('{"y": 0.' + "0" * 12 + "1", "partial"),  # leading zeros are not significant digits
    ('{"y": 1e99, "n": 0}', "complete"), ('{"y": 1e100', "invalid"),  # a finite float only
    ('{"y": 01', "invalid"), ('{"y": -}', "invalid"), ('{"y": 1.}', "invalid"), ('{"y": 1E}', "invalid"),
    ('{"y": 1, "n": 1.5', "invalid"), ('{"y": 1, "n": 2e3', "invalid"),  # integers have no fraction / exponent
    ('{"y": ²', "invalid"),  # str.isdigit() says True; JSON says no
])
def test_number_prefix_states(text, want):
    assert state(NUM, text) == want


def test_a_number_at_the_length_limit_cannot_end_in_a_dead_exponent():
    # one significant digit, so only the length limit binds: with 'E-' the text is one short of the limit
    fits = "-0." + "0" * (MAX_NUMBER_CHARS - 7) + "1"
    assert len(fits + "E-") == MAX_NUMBER_CHARS - 1 and state({"type": "number"}, fits + "E-") == "partial"
    assert state({"type": "number"}, fits + "E-5") == "complete"
    longer = "-0." + "0" * (MAX_NUMBER_CHARS - 6) + "1"
    assert state({"type": "number"}, longer + "E-") == "invalid"  # no digit would fit after it


def test_top_level_number_is_complete_yet_may_go_on():
    assert state({"type": "number"}, "12") == "complete"
    assert state({"type": "number"}, "12.") == "partial" and state({"type": "number"}, "-") == "partial"


@pytest.mark.parametrize("schema,field", [({"type": []}, "type"),
                                          ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems"),
                                          ({"type": "object", "properties": {"a": {}}, "required": ["b"],
                                            "additionalProperties": False}, "required")])
def test_schemas_no_value_satisfies_are_refused(schema, field):
    with pytest.raises(SchemaError, match=field):
        check_schema(schema)


def test_random_logits_biased_to_number_characters_still_give_valid_json(tiny_model_dir):
    """Tokens for digits, '-', '.', 'e', 'E' get a large bonus: the decode walks into long numbers and
    exponents, the dead ends the old grammar admitted. Every run must end in a schema-valid object."""
    from domainvlm.models.loader import load_processor

    tok = load_processor(tiny_model_dir).tokenizer
    eos = [tok.eos_token_id]
    bonus = torch.zeros(len(tok))
    for i in range(len(tok)):
        piece = tok.decode([i])
        if piece and all(c in "0123456789-.eE+" for c in piece):
            bonus[i] = 6.0
    g = torch.Generator().manual_seed(0)
    for trial in range(6):
        proc = JsonLogits(NUM, tok, prompt_len=1, eos_ids=eos)
        ids = torch.tensor([[0]])
        for _ in range(120):
            scores = proc(ids, torch.randn(1, len(tok), generator=g) + bonus)
            nxt = int(scores[0].argmax())
            if nxt in eos:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        text = tok.decode(ids[0, 1:].tolist(), skip_special_tokens=True)
        assert state(NUM, text) == "complete", (trial, text)
        v = json.loads(text)
        assert math.isfinite(v["y"]) and isinstance(v["n"], int), (trial, text)
