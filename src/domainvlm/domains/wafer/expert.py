"""Recipe for the bundled wafer expert: a compact Qwen2-VL trained on MixedWM38 + WM-811K, selected on val.

    domainvlm train-expert --config configs/wafer-expert.yaml [key=value ...]

Full fine-tuning from scratch of the compact model (models/compact.py) with the fixed-canvas input
(domains/wafer/canvas.py), the 8 dihedral symmetries and free die-grid rotations as augmentation, class-balanced
sampling of WM-811K and
every conversation template in English and Chinese (domains/wafer/expert_data.py). The learning-rate schedule runs
on the larger of step and wall-clock progress, so a run ends annealed inside its time budget. The model
(raw or EMA weights) with the best val score, mean(MixedWM38 exact match, WM-811K macro-F1) decoded with the
constrained answer head, is saved as a standard HF folder with ``answer_head: wafer-diagnosis``.
Optionally a CNN teacher, trained first on the same batches or loaded (expert_teacher.py), is distilled into
the diagnosis line token by token (``kd_loss``, expert_kd.py); it is a training tool and never saved with it.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import torch

from ...errors import UserError
from ...io import write_json
from ...train.recipe_steps import (adamw, ema_or_none, select_weights, set_lr, step_optimizer, train_progress,
                                   warmup_cosine)
from ...train.recipe_log import RecipeLog
from ...train.speed import step_loss
from .expert_config import ExpertConfig, _check, check  # noqa: F401 - ExpertConfig is the recipe's config


def _build(cfg: ExpertConfig, out: Path):
    from ...models.compact import build_compact
    from ...models.loader import load_model
    from .expert_data import corpus

    if cfg.init_model:
        model, proc = load_model(cfg.init_model, device="cpu", dtype="float32")
    else:
        model, proc = build_compact(out / "init", corpus(), cfg.compact, cfg.seed)
    dv = dict(getattr(model.config, "domainvlm", None) or {})
    dv["answer_head"] = "wafer-diagnosis"
    model.config.domainvlm = dv
    return model, proc


def _overlay(cfg: ExpertConfig, new_train, mix, mix_maps, classes, tax):
    """The new-class overlays of ``new_overlay_frac`` (expert_overlay.py), or None."""
    if cfg.new_overlay_frac <= 0 or new_train is None:
        return None
    from .expert_extend import bound_rows
    from .expert_overlay import NewOverlay

    bound = bound_rows(new_train, cfg.new_augment_bound) if cfg.new_augment_bound else None
    return NewOverlay(new_train, mix, mix_maps, classes, tax, cfg.new_augment, bound)


def _head(ws, n: int, spread: bool = False):
    """The first ``n`` maps of ``ws`` (all when n is 0), or with ``spread`` ``n`` maps evenly spaced over it."""
    if not n or n >= len(ws):
        return ws
    from .sources import WaferSet

    idx = [i * len(ws) // n for i in range(n)] if spread else range(n)
    pick = lambda xs: [xs[i] for i in idx] if xs is not None else None  # noqa: E731
    return WaferSet(pick(ws.maps), pick(ws.defects), pick(ws.split), ws.source, ws.taxonomy, ws.path)


@torch.no_grad()
def evaluate(head, banks, batch_size: int = 1024, limit: int = 0, seed: int = 0, tax=None) -> dict:
    """Val metrics per set through the constrained head (English questions chosen as `domainvlm eval` does);
    a bank of new-class maps (taxonomy "custom") is scored by the added classes' F1. ``tax``: the taxonomy
    the gold labels are scored in (default: the head's)."""
    from ...inference.attention import answering_attention
    from .expert_data import PixelMaker
    from .instruct import QUESTIONS
    from .metrics import added_class_f1, wafer_metrics

    px = PixelMaker(head.processor, head.model.device)
    res = {}
    for bank in banks:
        rng = random.Random(seed)
        n = len(bank) if not limit else min(limit, len(bank))
        preds = []
        for s in range(0, n, batch_size):
            e = min(n, s + batch_size)
            msgs = [[{"role": "user", "content": "<image>\n" + rng.choice(QUESTIONS["en"])}] for _ in range(s, e)]
            pv, g = px(bank.canvas[s:e])
            with answering_attention(head.model.device):  # no cuDNN plan per decode step's new shape
                preds += head.diagnose(pv, g, [head.prompt_ids(m) for m in msgs], ["en"] * (e - s))
        m = wafer_metrics(bank.defects[:n], preds, bank.taxonomy, tax or head.tax)
        res[bank.source] = {k: m[k] for k in ("n", "exact_match", "macro_f1", "unparsed_rate")}
        if bank.taxonomy == "custom":
            res[bank.source] |= added_class_f1(m, tax or head.tax)
    key = {"mixedwm38": "exact_match", "wm811k": "macro_f1", "custom": "new_class_f1"}
    res["score"] = sum(res[b.source][key[b.taxonomy]] for b in banks) / len(banks)
    return res


def _card(cfg: ExpertConfig, folder: Path, best: dict) -> None:
    from ...models.card import base_license, base_model_id, front_matter, write_card

    names = {"mixedwm38": "MixedWM38", "wm811k": "WM-811K"}
    results = [(f"{names.get(k, k)} val", v) for k, v in best.items() if isinstance(v, dict)]
    fm = front_matter(folder.parent.name, base_model_id(cfg.init_model), base_license(cfg.init_model),
                      datasets=list(names.values()), results=results, tags=["wafer-map", "qwen2_vl"])
    cal = f"\n{calibrate_hint(cfg, folder)}\n" if cfg.taxonomy else ""
    write_card(folder, fm, f"# {folder.parent.name}\n\nWafer-map expert trained with `domainvlm train-expert`; "
                           f"validation metrics are in the front matter and val_selection.json.\n{cal}")


def calibrate_hint(cfg: ExpertConfig, folder: Path) -> str:
    """A continued model answers with new classes, so init_model's calibration.json does not hold for it (none
    is copied): confidence is then the raw line probability and nothing abstains for low confidence."""
    data = " ".join(f"--data {d}" for d in (cfg.new_val, cfg.mixedwm38, cfg.wm811k) if d)
    return (f"Not calibrated yet (the classes changed): fit its confidence and abstention threshold on val with "
            f"`domainvlm calibrate --model {folder} {data} --split val`.")


def train_expert(cfg: ExpertConfig) -> dict:
    if cfg.phases:
        from .expert_phases import run_phases

        check(cfg)  # teacher_only inside phases; run_phases checks each phase again
        return run_phases(cfg, train_expert, check=_check)
    _check(cfg)
    for name in ("mixedwm38", "wm811k"):  # before anything is written to output_dir
        if not Path(getattr(cfg, name)).exists():
            raise UserError(f"{getattr(cfg, name)}: wafer data not found (set {name}=PATH)")
    from ...models.qwen_fast import FastVision, embed_with_images, enable_uniform_vision_attention
    from ...train.checkpoint import save_model_dir
    from .expert_data import CLASSES, MapBank, PixelMaker, Superposer, Templates, numpy_canvas_check
    from .expert_sample import BatchDraw
    from .expert_teacher import class_probs, setup_teacher
    from .head import WaferHead
    from .expert_extend import (change_points, check_answer_lines, final_reports, freeze_lm_layers, new_banks,
                                old_baseline, penalised, setup_taxonomy)
    from .presence import PresenceHead, pattern_targets
    from .expert_phases import prepare_run_dir
    from .sources import load_wafer_file

    t_start = time.time()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    out = Path(cfg.output_dir)
    prepare_run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    log = RecipeLog(out, cfg.report_to, asdict(cfg))  # train_log.txt, TensorBoard, the curves PNG at the end
    log(f"# wafer expert recipe, {time.strftime('%Y-%m-%d %H:%M:%S')}, device {dev} "
              f"({torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'cpu'}), torch {torch.__version__}")
    log("# config " + json.dumps(asdict(cfg)))
    tax, classes = setup_taxonomy(cfg)  # the model's own taxonomy, with the config's new classes added
    model, proc = _build(cfg, out)
    size = model.config.domainvlm.get("image_size", cfg.compact.image_size)
    model.to(dev)
    enable_uniform_vision_attention(model)
    head = check_answer_lines(WaferHead, model, proc, tax, cfg.taxonomy or "taxonomy")
    sets = {}
    for name, path in (("mixedwm38", cfg.mixedwm38), ("wm811k", cfg.wm811k)):
        ws = load_wafer_file(path)
        if not numpy_canvas_check(ws, size):
            raise RuntimeError("canvas_batch differs from render_map")
        split = {s: _head(_head(ws.select(s), cfg.limit_maps), cfg.replay_limit if s == "train" else cfg.eval_limit,
                          spread=cfg.eval_spread and s == "val") for s in ("train", "val")}  # val: the maps evals score
        sets[name] = {s: MapBank(w, size, dev, name, classes, tax) for s, w in split.items()}
        if name == "mixedwm38":
            mix_maps = split["train"].maps  # raw die grids, for superposed mixtures
        log(f"# {name}: train {len(sets[name]['train'])}, val {len(sets[name]['val'])} maps")
    new = new_banks(cfg, tax, classes, size, dev)
    if new["train"] is not None:
        log(f"# new classes {[n for n in tax.names if n not in CLASSES]}: train {len(new['train'])}, "
                  f"val {len(new['val']) if new['val'] else 0}, test {len(new['test']) if new['test'] else 0} maps")
    tmpl = Templates(proc, model.config.image_token_id, size, dev, classes, tax)
    px = PixelMaker(proc, dev)
    log(f"# {len(tmpl.kind)} templates, longest {int(tmpl.length.max())} tokens; "
              f"setup {time.time() - t_start:.0f}s")
    mix, wm = sets["mixedwm38"]["train"], sets["wm811k"]["train"]
    sup = Superposer(mix, mix_maps) if cfg.superpose_frac > 0 else None
    draw = BatchDraw(cfg, mix, wm, sup, new["train"], _overlay(cfg, new["train"], mix, mix_maps, classes, tax))
    old_val = [sets["mixedwm38"]["val"], sets["wm811k"]["val"]]
    vals = old_val + [new["val"]] * bool(new["val"])
    teacher = setup_teacher(cfg, draw, classes, tax, vals, size, out, dev, log)
    if cfg.teacher_only:
        log(f"# done: teacher only, {time.time() - t_start:.1f}s total")
        log.close()
        return {"teacher": str(cfg.teacher or out / "teacher.safetensors"), "total_s": round(time.time() - t_start, 1)}
    vision = FastVision(model)
    if not cfg.train_vision:  # frozen: its forward runs without autograd, its weights stay the init model's
        vision.visual.requires_grad_(False)
    freeze_lm_layers(model, cfg.train_lm_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    presence = PresenceHead(model.config.text_config.hidden_size).to(dev) if cfg.presence_loss > 0 else None
    if presence is not None:  # trained with the model, never saved (the HF folder stays a plain Qwen2-VL)
        params += list(presence.parameters())
        present = pattern_targets(CLASSES, dev)
    opt = adamw(params, cfg.lr, cfg.weight_decay, dev)
    averager = ema_or_none(model, cfg.ema_decay)
    ema = averager.model if averager is not None else None
    pv0, _ = px(mix.canvas[:3])
    log(f"# fast vision path vs model: max diff {vision.check(pv0, tmpl.grid):.1e}")
    base_old = (old_baseline(cfg, dev, tax, old_val, log, evaluate)
                if cfg.select_penalty > 0 else None)  # the drop the selection penalises is against these
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    kd = None
    if cfg.kd_loss > 0:
        from .expert_kd import LineKD

        kd = LineKD(proc.tokenizer, tmpl, classes, tax, dev, cfg.kd_temperature, cfg.kd_support)
        kd_scale = cfg.kd_loss * cfg.kd_temperature ** 2
    loss_opts = SimpleNamespace(packing=False, answer_logits=cfg.answer_logits)  # train/speed.step_loss's options
    best, history, step, progress = None, [], 0, 0.0
    evals = sorted(cfg.eval_at)
    t0, t_eval = time.time(), 0.0
    model.train()
    while progress < 1.0:
        lr_scale = warmup_cosine(step, progress, cfg.warmup_steps, cfg.min_lr_ratio)
        set_lr(opt, cfg.lr * lr_scale)
        canvas, cls = draw(cfg.batch_size, gen)
        t = tmpl.sample(cls, cfg.follow_up_frac, cfg.out_of_scope_frac, gen, cfg.short_answer_frac)
        order = torch.argsort(tmpl.length[t])  # length buckets: less padding per forward
        n_tok = (tmpl.labels[t][:, 1:] != -100).sum()
        loss_sum, aux_sum, kd_sum = 0.0, 0.0, 0.0
        if kd is not None:  # the teacher on each sample's own augmented view (eval mode, no grad)
            q = class_probs(teacher, canvas, cfg.kd_temperature)
            n_kd = kd.rows(t).clamp_min(1)
        for part in order.chunk(cfg.length_buckets):
            pv, _ = px(canvas[part])
            batch = tmpl.batch(t[part])
            with amp:
                with torch.set_grad_enabled(cfg.train_vision):
                    img = vision(pv, tmpl.grid)
                emb = embed_with_images(model, batch.pop("input_ids"), img)
                if kd is None:
                    part_loss = step_loss(model, {"inputs_embeds": emb, **batch}, loss_opts)
                else:
                    part_loss, logits, keep = step_loss(model, {"inputs_embeds": emb, **batch}, loss_opts, True)
                    part_kd = kd_scale * kd.kl_sum(logits, keep, t[part], q[part]) / n_kd
            part_loss = part_loss * (batch["labels"][:, 1:] != -100).sum() / n_tok
            if kd is not None:
                part_loss = part_loss + part_kd
                kd_sum = kd_sum + part_kd.detach()
            if presence is not None:
                aux = presence.loss(img, present[cls[part]])
                part_loss = part_loss + cfg.presence_loss * aux * len(part) / len(order)
                aux_sum = aux_sum + aux.detach() * len(part) / len(order)
            part_loss.backward()
            loss_sum = loss_sum + part_loss.detach()
        loss = loss_sum
        step_optimizer(opt, params, cfg.max_grad_norm)
        if averager is not None:
            averager.update(step)
        step += 1
        train_s = time.time() - t0 - t_eval
        progress = train_progress(step, cfg.max_steps, train_s, cfg.time_budget_s)
        log.progress(progress, step)
        if step % cfg.log_every == 0 or progress >= 1.0:  # the last step too: the curves end where training did
            rec = {"step": step, "loss": round(loss.item(), 5), "lr": round(cfg.lr * lr_scale, 7),
                   "progress": round(progress, 4), "train_s": round(train_s, 1),
                   "maps_per_s": round(step * cfg.batch_size / max(train_s, 1e-9), 1)}
            if presence is not None:
                rec["presence_loss"] = round(float(aux_sum), 5)
            if kd is not None:
                rec["kd_loss"] = round(float(kd_sum), 5)  # weighted, included in loss
            history.append(rec)
            log(json.dumps(rec))
            log.sync(history)
            log.progress(progress, step, rec["loss"])
        while evals and progress >= evals[0] - 1e-9:
            evals.pop(0)
            te = time.time()
            best = select_weights(step, model, ema,
                                  lambda m: penalised(evaluate(head if m is model else WaferHead(m, proc, tax), vals,
                                                               limit=cfg.eval_limit), base_old, cfg),
                                  "score", best, history, log)
            log.sync(history)
            t_eval += time.time() - te
    state = best.pop("state")
    model.load_state_dict(state)
    model.eval()
    save_model_dir(model, proc, out / "model")
    tax.save(out / "model")  # the classes the head answers with, stored with the model
    _card(cfg, out / "model", best)
    if cfg.taxonomy:
        log("# " + calibrate_hint(cfg, out / "model"))
    summary = {"steps": step, "train_s": round(time.time() - t0 - t_eval, 1), "best": best}
    if new["test"] is not None:  # held back: scored once, never used for selection
        summary |= final_reports(cfg, model, proc, tax, old_val, new["test"], log, evaluate,
                                 base_old)
        if "baseline" in summary:
            summary["change_points"] = change_points(best, summary["baseline"])
            log(f"# change vs {cfg.init_model} (points) {json.dumps(summary['change_points'])}")
    summary["total_s"] = round(time.time() - t_start, 1)
    write_json(out / "val_selection.json", {"summary": summary, "history": history})
    log("# best " + json.dumps(best))
    log(f"# done: {step} steps, {summary['total_s']}s total")
    log.close(history)
    return summary
