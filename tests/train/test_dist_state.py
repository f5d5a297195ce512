"""The optimizer state formats a checkpoint may hold (torch's by index, torch.distributed.checkpoint's by name
under FSDP) convert into each other, so a checkpoint of one launch resumes under the other."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

from domainvlm.errors import UserError
from domainvlm.train.dist_state import by_index, by_name, param_names


def _stepped():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.01},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=0.1)
    model(torch.randn(5, 3)).pow(2).mean().backward()
    opt.step()
    return model, opt


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_by_name_is_torch_distributed_checkpoints_format_and_by_index_undoes_it():
    model, opt = _stepped()
    names = param_names(model, opt)
    assert names == ["0.weight", "2.weight", "0.bias", "1.weight", "1.bias", "2.bias"]  # group order, not module
    sd = opt.state_dict()
    named = by_name(sd, names)
    assert _same(named, get_optimizer_state_dict(model, opt))
    assert by_name(named, names) is named and by_index(sd, names) is sd  # already in the wanted format
    assert _same(by_index(named, names), sd)
    fresh = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.ndim >= 2]},
                               {"params": [p for p in model.parameters() if p.ndim < 2]}], lr=0.1)
    fresh.load_state_dict(by_index(named, names))
    assert _same(fresh.state_dict(), sd)


def test_a_checkpoint_of_another_model_is_one_clear_error():
    model, opt = _stepped()
    named = by_name(opt.state_dict(), param_names(model, opt))
    with pytest.raises(UserError, match="names parameters this model lacks"):
        by_index(named, ["a", "b"])
    with pytest.raises(UserError, match="more parameters than this model trains"):
        by_name(opt.state_dict(), ["a", "b"])
