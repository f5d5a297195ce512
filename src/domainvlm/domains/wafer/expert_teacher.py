"""The wafer recipe's in-run CNN teacher (train/teacher.py): trained on the recipe's own batches, or loaded.

It sees the map canvas the expert sees (palette indices 0 off-wafer / 1 pass / 2 fail), as three one-hot
planes average-pooled by ``teacher_downsample`` (a die of k pixels becomes k/d pixels of exact die shares, so
a factor that divides the die size loses nothing), and answers a softmax over the recipe's class list (the 38
MixedWM38 lines first; WM-811K's 9 classes are among them). Trained with ``teacher_steps`` on batches drawn
exactly as the expert's (same mix, class balancing and die-grid symmetries, its own random stream), saved as
``output_dir/teacher.safetensors`` (never inside the model folder) and loaded by a later run with
``teacher=PATH``, so a GPU run can train the teacher in one call and distil it in the next.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import UserError
from ...train.teacher import TeacherCNN, load_teacher, save_teacher, teacher_logits
from .canvas import dihedral

FILE = "teacher.safetensors"


def canvas_input(canvas: torch.Tensor, factor: int = 1) -> torch.Tensor:
    """(B, S, S) palette indices -> (B, 3, S/f, S/f) shares of off-wafer / pass / fail per pooled pixel."""
    planes = (canvas.unsqueeze(1) == torch.arange(3, device=canvas.device, dtype=canvas.dtype).view(1, 3, 1, 1))
    x = planes.float()
    return F.avg_pool2d(x, factor) if factor > 1 else x


def build(n_classes: int, width: int, factor: int, seed: int, device) -> TeacherCNN:
    """A new teacher, initialised from its own seed without touching the recipe's random state."""
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        net = TeacherCNN(n_classes, width, 3, functools.partial(canvas_input, factor=factor))
    return net.to(dev).to(memory_format=torch.channels_last)


def views(canvas: torch.Tensor):
    """The 8 dihedral views of a canvas batch (as expert_data.dihedral_batch's k = 0..7)."""
    return (dihedral(canvas, k) for k in range(8))


@torch.no_grad()
def class_probs(net: TeacherCNN, canvas: torch.Tensor, temperature: float = 1.0, tta: bool = False,
                chunk: int = 1024) -> torch.Tensor:
    """float32 softmax(logits / temperature) per map; ``tta``: averaged over the 8 dihedral views."""
    if not tta:
        return F.softmax(teacher_logits(net, canvas, chunk) / temperature, -1)
    return sum(F.softmax(teacher_logits(net, v, chunk) / temperature, -1) for v in views(canvas)) / 8


def scores(net: TeacherCNN, banks, classes: list[str], tax) -> dict:
    """Per val bank the metrics the expert is selected on (wafer_metrics, as recipe evaluate), argmax and 8-view
    dihedral TTA: exact match and macro-F1."""
    from .metrics import wafer_metrics

    sets = [tax.canonical(c.split("+")) for c in classes]
    out = {}
    for bank in banks:
        res = {}
        for tag, tta in (("", False), ("tta_", True)):
            pred = class_probs(net, bank.canvas, tta=tta).argmax(-1).tolist()
            m = wafer_metrics(bank.defects, [sets[i] for i in pred], bank.taxonomy, tax)
            res |= {f"{tag}exact_match": round(m["exact_match"], 5), f"{tag}macro_f1": round(m["macro_f1"], 5)}
        out[bank.source] = {"n": len(bank), **res}
    return out


def setup_teacher(cfg, draw, classes: list[str], tax, val_banks, size: int, out: Path, device, log):
    """The teacher the run distils (None without ``teacher`` / ``teacher_steps``): loaded from ``cfg.teacher`` or
    trained on ``draw(batch, generator) -> (canvas, class index)`` and saved as ``out/teacher.safetensors``;
    its val scores are logged either way."""
    from ...train.teacher import train_teacher

    if not cfg.teacher and not cfg.teacher_steps:
        return None
    t0 = time.time()
    torch.backends.cudnn.benchmark = True  # fixed shapes: the teacher's convolutions pick their fastest kernels
    if cfg.teacher:
        net, meta = load_teacher(cfg.teacher, device, None)
        if meta.get("classes") != classes or meta.get("canvas") != size:
            raise UserError(f"{cfg.teacher}: teacher of {len(meta.get('classes') or [])} classes on a "
                            f"{meta.get('canvas')}-px canvas; this run needs {len(classes)} classes "
                            f"(the same list, in order) on {size} px")
        net.prep = functools.partial(canvas_input, factor=int(meta["downsample"]))
        how = {"teacher": str(cfg.teacher), "downsample": meta["downsample"], "width": net.width}
    else:
        net = build(len(classes), cfg.teacher_width, cfg.teacher_downsample, cfg.seed + 1, device)
        gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # its own stream: the expert's is untouched
        train_teacher(net, lambda: draw(cfg.teacher_batch, gen), cfg.teacher_steps, cfg.teacher_lr, log)
        how = {"teacher_steps": cfg.teacher_steps, "teacher_s": round(time.time() - t0, 1)}
    t1 = time.time()
    res = scores(net, val_banks, classes, tax)
    log("# teacher " + json.dumps({**how, **res, "teacher_eval_s": round(time.time() - t1, 1)}))
    if not cfg.teacher:
        save_teacher(net, out / FILE, {"classes": classes, "canvas": size, "downsample": cfg.teacher_downsample,
                                       "steps": cfg.teacher_steps, "val": res})
        log(f"# teacher saved: {out / FILE}")
    return net
