"""Optimizer and RNG state in a checkpoint that resumes under any launch: one process, DDP or FSDP.

Under FSDP each rank holds a shard of the optimizer state. :func:`gather_optimizer` collects the full state on
rank 0 (keyed by parameter name: torch.distributed.checkpoint's format) and :func:`load_optimizer` shards it back
after ``accelerate.prepare``. Elsewhere the state is torch's own (keyed by index); :func:`by_name` /
:func:`by_index` convert, so an FSDP checkpoint resumes on one GPU and a DDP one under FSDP.
"""

from __future__ import annotations

import torch
from accelerate.utils import DistributedType

from ..errors import UserError


def is_fsdp(acc) -> bool:
    return acc.distributed_type == DistributedType.FSDP


def param_names(model, opt) -> list[str]:
    """The optimizer's parameters by name, in its index order (call before accelerate.prepare)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in opt.param_groups for p in g["params"]]


def by_name(sd: dict, names: list[str]) -> dict:
    if all(isinstance(k, str) for k in sd["state"]) and all(isinstance(p, str) for g in sd["param_groups"]
                                                            for p in g["params"]):
        return sd
    if any(i >= len(names) for g in sd["param_groups"] for i in g["params"]):
        raise UserError("--resume: the checkpoint's optimizer holds more parameters than this model trains: "
                        "resume with the same model and mode")
    return {"state": {names[i]: v for i, v in sd["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in sd["param_groups"]]}


def by_index(sd: dict, names: list[str]) -> dict:
    if all(isinstance(p, int) for g in sd["param_groups"] for p in g["params"]):
        return sd
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({n for g in sd["param_groups"] for n in g["params"]} - set(index))
    if unknown:
        raise UserError(f"--resume: the checkpoint's optimizer state names parameters this model lacks "
                        f"({', '.join(unknown[:3])}): resume with the same model and mode")
    return {"state": {index[n]: v for n, v in sd["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in sd["param_groups"]]}


def _inner(opt):
    return getattr(opt, "optimizer", opt)  # accelerate's AcceleratedOptimizer wraps the torch one


def gather_optimizer(acc, model, opt) -> dict:
    """The full optimizer state on rank 0. Under FSDP every rank must call it (a collective)."""
    if not is_fsdp(acc):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, _inner(opt), options=StateDictOptions(full_state_dict=True,
                                                                                 cpu_offload=True))


def load_optimizer(acc, model, opt, sd: dict, names: list[str], prepared: bool) -> None:
    """Load a checkpoint's optimizer state: before accelerate.prepare (prepared=False) unless under FSDP, where
    the parameters are sharded by prepare and every rank loads the full state to keep its shard (prepared=True)."""
    if is_fsdp(acc) != prepared:
        return
    if not prepared:
        opt.load_state_dict(by_index(sd, names))
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, _inner(opt), by_name(sd, names), options=StateDictOptions(full_state_dict=True))


def all_ranks(obj) -> list | None:
    """``obj`` of every rank, in rank order, on every rank (None in a single process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _Gathered:
    """An unwrapped model whose save_pretrained writes a state dict gathered from FSDP shards beforehand."""

    def __init__(self, model, state_dict):
        self._model, self._sd = model, state_dict

    def save_pretrained(self, path, **kw):
        return self._model.save_pretrained(path, state_dict=self._sd, **kw)

    def __getattr__(self, name):
        return getattr(self._model, name)


def saveable(acc, model):
    """What rank 0 saves. Under FSDP every rank must call this (it all-gathers the shards)."""
    if not is_fsdp(acc):
        return acc.unwrap_model(model)
    return _Gathered(acc.unwrap_model(model), acc.get_state_dict(model))
