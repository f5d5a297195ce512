"""Atomic checkpoints: a folder is written beside its final name and swapped in only when complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..io import swap_in


def save_model_dir(model, processor, dest: Path) -> None:
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    swap_in(tmp, dest)


def save_checkpoint(model, processor, optimizer, scheduler, state: dict, dest: Path) -> None:
    """Model/adapter in HF format plus optimizer/scheduler state and the trainer's own counters."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "model", safe_serialization=True)
    processor.save_pretrained(tmp / "model")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state()}, tmp / "optim.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    swap_in(tmp, dest)


def load_checkpoint_state(path: Path) -> tuple[dict, dict]:
    state = json.loads((Path(path) / "trainer_state.json").read_text(encoding="utf-8"))
    # weights_only: our own optimizer/scheduler tensors and plain containers, no arbitrary objects
    optim = torch.load(Path(path) / "optim.pt", map_location="cpu", weights_only=True)
    return state, optim
