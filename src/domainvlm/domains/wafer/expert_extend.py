"""A fab's own taxonomy in the wafer expert recipe: continue a model on new classes with replay of the old data.

    domainvlm train-expert --config configs/fab-taxonomy-n50-cpu.yaml

``taxonomy`` (YAML) adds classes and mixtures to ``init_model``'s own taxonomy (taxonomy.extend); ``new_data``
holds the labelled maps of the new classes (labelled.py), which fill ``new_frac`` of every batch while the rest
replays MixedWM38 / WM-811K train maps exactly as the recipe trains them. Selection scores the old val sets as
before plus the new classes' F1 on ``new_val``; ``new_test`` is held back and scored once on the saved model.
The saved folder carries the extended taxonomy.json, so its head answers with the new classes.

Everything here is the recipe's own loop (expert.py) with a third data bank: one code path.
"""

from __future__ import annotations

import torch

from ...errors import UserError


def setup_taxonomy(cfg):
    """(taxonomy the model answers with, the recipe's class list) for ``cfg``."""
    from ...taxonomy import extend
    from .expert_data import class_names
    from .taxonomy import default, for_model_dir

    base = for_model_dir(cfg.init_model) if cfg.init_model else default()
    tax = extend(base, cfg.taxonomy) if cfg.taxonomy else base
    return tax, class_names(tax)


def check_answer_lines(head_cls, model, proc, tax, source) -> object:
    """The head for ``tax``; a diagnosis line that is a prefix of another is the taxonomy's fault: one line."""
    try:
        return head_cls(model, proc, tax)
    except ValueError as e:
        raise UserError(f"{source}: {e}") from None


def new_banks(cfg, tax, classes, size: int, device) -> dict:
    """MapBanks of the new-class maps: train (new_data), val, test; absent ones are None."""
    from .expert_data import MapBank

    out = {}
    for key, path in (("train", cfg.new_data), ("val", cfg.new_val), ("test", cfg.new_test)):
        if not path:
            out[key] = None
            continue
        ws = _load_new(path, tax, cfg.taxonomy)
        if key == "train" and cfg.limit_maps:
            ws.maps, ws.defects = ws.maps[:cfg.limit_maps], ws.defects[:cfg.limit_maps]
        try:
            out[key] = MapBank(ws, size, device, f"new-{key}", classes, tax)
        except ValueError:  # a label set the taxonomy does not allow as an answer
            bad = next(d for d in ws.defects if "+".join(d) not in classes and d)
            raise UserError(f"{path}: label set {'+'.join(bad)} is no answer of the taxonomy "
                            f"(add it to 'combinations' in {cfg.taxonomy})") from None
    return out


def _load_new(path, tax, tax_source):
    """A labelled map npz (labelled.py), or a labels CSV of the fab's map files (mapfiles/labels.py)."""
    from pathlib import Path

    from .labelled import load_labelled_npz
    from .mapfiles.labels import labelled_maps, source_kind

    if Path(path).suffix.lower() == ".csv" and source_kind(Path(path)) == "wafer-labels":
        return labelled_maps(Path(path), tax, tax_source)
    return load_labelled_npz(path, tax)


def bound_rows(bank, bound) -> torch.Tensor:
    """Per map of ``bank``: does its label name a class of ``bound`` (bound to an orientation)?"""
    return torch.tensor([any(c in bound for c in d) for d in bank.defects], dtype=torch.bool, device=bank.cls.device)


def sample_new(bank, n: int, augment: str, gen: torch.Generator,
               bound: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(canvas, class) of ``n`` new-class maps drawn uniformly; ``mirror`` flips left-right only, so a pattern
    bound to the notch (at the bottom) stays there; ``dihedral`` any of the 8 symmetries, except for the maps
    ``bound`` marks (bound_rows): those get one of the two that keep the bottom (identity, left-right mirror)."""
    from .expert_data import dihedral_batch

    dev = bank.cls.device
    i = torch.randint(0, len(bank), (n,), device=dev, generator=gen)
    canvas = bank.canvas[i]
    if augment == "dihedral":
        k = torch.randint(0, 8, (n,), device=dev, generator=gen)
        if bound is not None:
            canvas = torch.where(bound[i][:, None, None], canvas, dihedral_batch(canvas, k))
            augment = "mirror"  # every map may still be mirrored: the bound ones keep the bottom so
        else:
            canvas = dihedral_batch(canvas, k)
    if augment == "mirror":
        flip = torch.rand(n, device=dev, generator=gen) < 0.5
        canvas = torch.where(flip[:, None, None], canvas.flip(2), canvas)
    return canvas, bank.cls[i]


def freeze_lm_layers(model, n: int) -> None:
    """Train only the LM's last ``n`` decoder layers (and its final norm): fewer weights move, so less of what
    the old classes rely on; the token embeddings (tied to the LM head) stay too. ``n`` = 0: all trainable."""
    if n <= 0:
        return
    lm = model.model.language_model
    lm.embed_tokens.requires_grad_(False)
    for layer in lm.layers[:max(0, len(lm.layers) - n)]:
        layer.requires_grad_(False)


def _baseline_head(cfg, device):
    from ...models.loader import load_model
    from .head import WaferHead
    from .taxonomy import for_model_dir

    base, bproc = load_model(cfg.init_model, device=str(device), dtype="float32")
    return WaferHead(base.eval(), bproc, for_model_dir(cfg.init_model))


def old_baseline(cfg, device, tax, old_val: list, log, evaluate) -> dict:
    """init_model's scores on the old val maps each eval scores (before training, for select_penalty)."""
    res = evaluate(_baseline_head(cfg, device), old_val, limit=cfg.eval_limit, tax=tax)
    log(f"# baseline ({cfg.init_model}) on old val {res}")
    return res


def penalised(res: dict, base: dict | None, cfg) -> dict:
    """``res`` with select_penalty x (old-class exact-match drop beyond select_drop_limit) taken off its score:
    the selection can favour weights that keep the old classes. Unchanged without a baseline."""
    if not base or cfg.select_penalty <= 0:
        return res
    over = sum(max(0.0, 100 * (base[s]["exact_match"] - res[s]["exact_match"]) - cfg.select_drop_limit)
               for s in ("mixedwm38", "wm811k") if s in res and s in base)
    return res | {"score_unpenalised": res["score"], "score": res["score"] - cfg.select_penalty * over / 100}


def final_reports(cfg, model, proc, tax, old_val: list, test, log, evaluate, base_old: dict | None = None) -> dict:
    """The saved model's scores on the held-back ``test`` bank and, with eval_baseline, init_model's on the same
    old val maps and test maps (its head knows only its own classes; ``base_old``: its old val scores already
    measured); the saved model's old val scores are the selection's (best). ``evaluate``: expert.evaluate."""
    from .head import WaferHead

    out = {"test": evaluate(WaferHead(model, proc, tax), [test])}  # whole: eval_limit is for the evals' val
    log(f"# held-back test {out['test']}")
    if cfg.eval_baseline and cfg.init_model:
        head = _baseline_head(cfg, model.device)
        banks = ([] if base_old is not None else old_val) + [test] * cfg.eval_baseline_test
        res = evaluate(head, banks, tax=tax) if banks else {}  # old val already cut to eval_limit
        if base_old is None and cfg.eval_baseline_test:
            out["baseline"] = res
        else:  # old val scored before training (base_old), or no test maps: no mean over other banks
            out["baseline"] = {k: v for k, v in {**(base_old or {}), **res}.items() if k != "score"}
        log(f"# baseline ({cfg.init_model}) {out['baseline']}")
    return out


def change_points(best: dict, baseline: dict) -> dict:
    """The continued model minus init_model on the old val sets, in percentage points."""
    return {s: {k: round(100 * (best[s][k] - baseline[s][k]), 2) for k in ("exact_match", "macro_f1")}
            for s in ("mixedwm38", "wm811k") if s in best and s in baseline}
