"""Atomic checkpoints: a folder is written beside its final name and swapped in only when complete.

A kill at any moment leaves a complete checkpoint somewhere: ``dest``, or (between the two renames of the
swap) ``.dest.old`` / ``.dest.tmp``; :func:`recover_checkpoint` puts the newest complete one back at ``dest``.
With ``keep`` > 1 the replaced checkpoints stay as ``dest-<step>`` (the newest ``keep - 1`` of them).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..io import swap_in


def save_model_dir(model, processor, dest: Path) -> None:
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    swap_in(tmp, dest)


def rng_state() -> dict:
    """This process's RNG streams (torch, CUDA, Python, NumPy), in a form torch.load(weights_only) reads."""
    np_state = np.random.get_state()
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": random.getstate(),  # tuples of ints: loadable with weights_only
            "numpy_rng": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def restore_rng(optim_state: dict, rank: int = 0, world: int = 1) -> None:
    """Put back the RNG streams saved with a checkpoint (dropout and the like continue as if never stopped): this
    rank's own where the run had as many processes, else rank 0's."""
    ranks = optim_state.get("rank_rng") or []
    optim_state = ranks[rank] if len(ranks) == world else optim_state
    if "torch_rng" in optim_state:
        torch.set_rng_state(optim_state["torch_rng"])
    cuda = optim_state.get("cuda_rng") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if "python_rng" in optim_state:
        v, internal, gauss = optim_state["python_rng"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy_rng" in optim_state:
        name, keys, *rest = optim_state["numpy_rng"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint folder; None if absent or cut short (trainer_state.json is last)."""
    try:
        step = json.loads((Path(path) / "trainer_state.json").read_text(encoding="utf-8"))["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if (Path(path) / "optim.pt").is_file() and (Path(path) / "model").is_dir() else None


def save_checkpoint(model, processor, optimizer_sd: dict, scheduler, state: dict, dest: Path, keep: int = 1,
                    rank_rng: list | None = None, config: dict | None = None) -> None:
    """Model/adapter in HF format plus optimizer/scheduler/RNG state and the trainer's own counters. One process
    writes it all (under FSDP from state gathered beforehand); rank_rng: every rank's rng_state(); config: the
    run's settings, kept with the weights they made (--resume compares them: train/preflight.py)."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "model", safe_serialization=True)
    processor.save_pretrained(tmp / "model")
    torch.save({"optimizer": optimizer_sd, "scheduler": scheduler.state_dict(), **rng_state(),
                **({"rank_rng": rank_rng} if rank_rng else {})}, tmp / "optim.pt")
    if config is not None:
        (tmp / "train_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")  # written last
    prev = checkpoint_step(dest)
    swap_in(tmp, dest, dest.with_name(f"{dest.name}-{prev}") if keep > 1 and prev is not None else None)
    _prune(dest, keep)


def _older(dest: Path) -> list[Path]:
    """Kept checkpoints ``dest-<step>``, oldest first."""
    found = [(p.name.rsplit("-", 1)[1], p) for p in dest.parent.glob(f"{dest.name}-*") if p.is_dir()]
    return [p for s, p in sorted((int(s), p) for s, p in found if s.isdigit())]


def _prune(dest: Path, keep: int) -> None:
    older = _older(dest)
    for p in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)


def recover_checkpoint(dest: Path, keep: int = 1) -> int | None:
    """After a kill mid-save: the newest complete one of ``dest`` / ``.dest.tmp`` / ``.dest.old`` becomes
    ``dest`` and the leftovers go. Returns its step (None: no complete checkpoint)."""
    dest = Path(dest)
    tmp, old = dest.with_name(f".{dest.name}.tmp"), dest.with_name(f".{dest.name}.old")
    steps = {p: checkpoint_step(p) for p in (dest, tmp, old)}
    done = [p for p in (dest, tmp, old) if steps[p] is not None]
    if not done:
        return None
    best = max(done, key=lambda p: steps[p])  # ties keep dest (listed first)
    if best != dest:
        if steps[dest] is not None and keep > 1:  # older than the one being swapped in: kept, as a save would
            os.replace(dest, dest.with_name(f"{dest.name}-{steps[dest]}"))
        shutil.rmtree(dest, ignore_errors=True)  # cut short, or older and not kept
        os.replace(best, dest)
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    return steps[best]


def load_checkpoint_state(path: Path) -> tuple[dict, dict]:
    state = json.loads((Path(path) / "trainer_state.json").read_text(encoding="utf-8"))
    # weights_only: our own optimizer/scheduler/RNG tensors and plain containers, no arbitrary objects
    optim = torch.load(Path(path) / "optim.pt", map_location="cpu", weights_only=True)
    return state, optim
