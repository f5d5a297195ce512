"""Recipe for a compact classification expert from any labelled image collection, selected on val.

    domainvlm train-classify --config configs/neu-steel-expert.yaml [key=value ...]

A compact Qwen2-VL (models/compact.py) is trained from scratch on the collection's train split with the
en/zh templates of recipe_data.py, on GPU-side augmented images (augment.augment_batch). Two training-only
aids make a ViT learn from ~1,000 images: a small CNN teacher trained first in the same run (train/teacher.py)
whose class probabilities on each augmented view are distilled into the expert's class-deciding token
(``kd_loss``), and a linear classifier on the mean-pooled image tokens (``aux_loss``). Neither is saved.
The out-of-domain input check (input_check.py) is fitted on the train split with its threshold on val.
The learning-rate schedule runs on the larger of step and wall-clock progress (``time_budget_s``), so a
run ends annealed within its budget. The weights (raw or EMA) with the best val accuracy, decoded through
the constrained head (head.py) exactly as ``domainvlm eval`` does, are saved as a standard HF folder with
``answer_head: classify`` and ``taxonomy.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import UserError
from ...models.compact import CompactConfig
from ...train.recipe_log import RecipeLog
from ...train.tracking import parse_report_to
from ...train.recipe_steps import (adamw, ema_or_none, select_weights, set_lr, step_optimizer, train_progress,
                                   warmup_cosine)


def _compact() -> CompactConfig:
    return CompactConfig(image_size=200, patch_size=10, merge_size=2, vision_dim=192, vision_depth=6,
                         vision_heads=6, hidden=256, layers=2, heads=4, kv_heads=2, intermediate=768,
                         vocab_size=1024, resample="bicubic")


@dataclass
class ClassifyExpertConfig:
    data: str = "../shared/data/neu-steel"   # ImageFolder / CSV / JSONL with train and val splits
    taxonomy: str | None = None               # taxonomy YAML (default: taxonomy.yaml beside the data, or derived)
    train_split: str = "train"
    val_split: str = "val"
    output_dir: str = "runs/classify-expert"
    compact: CompactConfig = field(default_factory=_compact)
    max_steps: int = 3000
    time_budget_s: float = 0.0                # > 0: also end (annealed) when this much training time has passed
    batch_size: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.02
    warmup_steps: int = 200
    weight_decay: float = 0.05
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999                  # 0 = no EMA weights
    crop_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])
    jitter: float = 0.2                       # brightness / contrast range
    aux_loss: float = 0.5                     # weight of the pooled-image-token classifier's loss
    kd_loss: float = 1.0                      # weight of the teacher distillation on the class token
    kd_temperature: float = 2.0
    teacher_steps: int = 0                    # > 0: train the CNN teacher this many steps first
    teacher_batch: int = 128
    teacher_lr: float = 0.1
    eval_at: list[float] = field(default_factory=lambda: [0.5, 0.8, 0.9, 1.0])
    log_every: int = 50
    report_to: str = "tensorboard"            # trackers (train/tracking.py): tensorboard | wandb | mlflow | none
    limit: int = 0                            # > 0: first N images per split (smoke tests)
    input_check_max_reject: float = 0.02      # out-of-domain check fitted on train, threshold on val; < 0: none
    seed: int = 0


def _check(cfg: ClassifyExpertConfig) -> None:
    """The value rules (train/config_checks.py), then crop_scale's shape."""
    from ...train.config_checks import check_classify

    check_classify(cfg)
    parse_report_to(cfg.report_to)  # an unknown tracker or a missing package: before anything is written
    if len(cfg.crop_scale) != 2 or not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
        raise UserError(f"config: crop_scale must be [low, high] with 0 < low <= high <= 1, got {cfg.crop_scale}")


def _splits(cfg):
    from .collection import known_taxonomy, read_source

    recs = read_source(cfg.data, taxonomy=cfg.taxonomy, langs=("en",), explain=False)  # eval's own questions
    out = {}
    for s in (cfg.train_split, cfg.val_split):
        out[s] = [r for r in recs if r.meta.get("split") == s][: cfg.limit or None]
        if not out[s]:
            present = sorted({str(r.meta.get("split")) for r in recs})
            raise UserError(f"{cfg.data}: no images in split {s!r} (present: {', '.join(present)})")
    return out[cfg.train_split], out[cfg.val_split], known_taxonomy(recs[0].labels["taxonomy"])


def _fit_input_check(cfg, train_recs, val_recs, folder, log) -> None:
    """The out-of-domain check (input_check.py): statistics of the train split, threshold on val."""
    from .input_check import MIN_TRAIN, fit_records, save

    if cfg.input_check_max_reject < 0:
        return
    if len(train_recs) < MIN_TRAIN:
        log(f"# no input check: {len(train_recs)} training images (it needs {MIN_TRAIN})")
        return
    chk = fit_records(train_recs, val_recs, cfg.compact.image_size, cfg.input_check_max_reject,
                      info={"train_data": str(cfg.data), "train_split": cfg.train_split, "val_split": cfg.val_split})
    save(folder, chk)
    log("# input check " + json.dumps({"threshold": chk.threshold, **chk.info}))


@torch.no_grad()
def val_accuracy(head, records, batch_size: int = 64) -> float:
    """Exact match through the constrained head, on the records' own (first) questions."""
    from ...data.images import load_image

    hits = 0
    for s in range(0, len(records), batch_size):
        chunk = records[s:s + batch_size]
        convs = [(r.messages[:1], [load_image(r.images[0])]) for r in chunk]
        pred = head.classify(convs, ["en"] * len(chunk))
        hits += sum(tuple(p) == tuple(r.labels["labels"]) for p, r in zip(pred, chunk))
    return hits / max(1, len(records))


def _losses(model, tmpl, vision, aux, imgs, cls, soft, cfg, gen, ip):
    from ...models.qwen_fast import embed_with_images, patchify

    t = tmpl.sample(cls, gen)
    pv = patchify(imgs, **ip)
    img = vision(pv, tmpl.grid)
    batch = tmpl.batch(t)
    emb = embed_with_images(model, batch.pop("input_ids"), img)
    out = model(inputs_embeds=emb, **batch)
    parts = {"lm": out.loss}
    target = soft if soft is not None else F.one_hot(cls, aux.out_features).float()
    if cfg.aux_loss > 0:
        pooled = img.view(len(cls), -1, img.shape[-1]).mean(1)
        parts["aux"] = cfg.aux_loss * F.cross_entropy(aux(pooled.float()), target)
    if cfg.kd_loss > 0 and soft is not None:
        rows, dl = tmpl.decision_logits(out.logits, t)
        if len(rows):
            T = cfg.kd_temperature
            parts["kd"] = cfg.kd_loss * T * T * F.kl_div(F.log_softmax(dl.float() / T, -1), soft[rows],
                                                         reduction="batchmean")
    return parts


def train_classify_expert(cfg: ClassifyExpertConfig) -> dict:
    _check(cfg)
    if not Path(cfg.data).exists():  # before anything is written to output_dir
        raise UserError(f"{cfg.data}: data not found (set data=PATH)")
    from ...models.compact import build_compact
    from ...models.qwen_fast import FastVision, enable_uniform_vision_attention, image_params
    from ...train.checkpoint import save_model_dir
    from .augment import augment_batch
    from .head import ClassifyHead
    from .instruct import corpus
    from .model_dir import finish_model_dir, prepare_model
    from .recipe_data import ImageBank, Templates
    from ...train.teacher import TeacherCNN, accuracy, train_teacher

    t_start = time.time()
    train_recs, val_recs, tax = _splits(cfg)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # fixed shapes: the teacher's convolutions pick their fastest kernels
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = RecipeLog(out, cfg.report_to, asdict(cfg))  # train_log.txt, TensorBoard, the curves PNG at the end
    log(f"# classify expert recipe, {time.strftime('%Y-%m-%d %H:%M:%S')}, device {dev} "
              f"({torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'cpu'}), torch {torch.__version__}")
    log("# config " + json.dumps(asdict(cfg)))
    model, proc = build_compact(out / "init", corpus(tax), cfg.compact, cfg.seed)
    prepare_model(model, train_recs)
    size = cfg.compact.image_size
    model.to(dev)
    enable_uniform_vision_attention(model)
    bank, vbank = ImageBank(train_recs, tax.answer_sets(), size, dev), ImageBank(val_recs, tax.answer_sets(), size, dev)
    tmpl = Templates(proc, model.config, tax, size, dev)
    log(f"# {tax.name}: {len(bank)} train / {len(vbank)} val images, {len(tmpl.sets)} answers, "
              f"{len(tmpl.length)} templates, class token distillable in {sorted(tmpl.decision)}; "
              f"setup {time.time() - t_start:.0f}s")
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    aug = lambda x: augment_batch(x, gen, cfg.crop_scale, cfg.jitter)  # noqa: E731
    teacher = None
    if cfg.teacher_steps:
        t0 = time.time()
        teacher = TeacherCNN(len(tmpl.sets)).to(dev).to(memory_format=torch.channels_last)

        def sample():
            i = torch.randint(0, len(bank), (cfg.teacher_batch,), device=dev, generator=gen)
            return aug(bank.images[i]), bank.cls[i]

        teacher = train_teacher(teacher, sample, cfg.teacher_steps, cfg.teacher_lr, log)
        log(json.dumps({"teacher_val_accuracy": accuracy(teacher, vbank.images, vbank.cls),
                              "teacher_train_accuracy": accuracy(teacher, bank.images, bank.cls),
                              "teacher_s": round(time.time() - t0, 1)}))
    aux = torch.nn.Linear(model.config.text_config.hidden_size, len(tmpl.sets)).to(dev)  # training only
    params = [p for p in model.parameters() if p.requires_grad] + list(aux.parameters())
    opt = adamw(params, cfg.lr, cfg.weight_decay, dev)
    averager = ema_or_none(model, cfg.ema_decay)
    ema = averager.model if averager is not None else None
    vision, ip = FastVision(model), image_params(proc)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    best, history, step, progress = None, [], 0, 0.0
    evals, t0, t_eval = sorted(cfg.eval_at), time.time(), 0.0
    model.train()
    while progress < 1.0:
        lr_scale = warmup_cosine(step, progress, cfg.warmup_steps, cfg.min_lr_ratio)
        set_lr(opt, cfg.lr * lr_scale)
        i = torch.randint(0, len(bank), (cfg.batch_size,), device=dev, generator=gen)
        imgs, cls = aug(bank.images[i]), bank.cls[i]
        soft = None
        if teacher is not None:
            with torch.no_grad(), amp:
                soft = F.softmax(teacher(imgs).float() / cfg.kd_temperature, -1)
        with amp:
            parts = _losses(model, tmpl, vision, aux, imgs, cls, soft, cfg, gen, ip)
            loss = sum(parts.values())
        loss.backward()
        step_optimizer(opt, params, cfg.max_grad_norm)
        if averager is not None:
            averager.update(step)
        step += 1
        train_s = time.time() - t0 - t_eval
        progress = train_progress(step, cfg.max_steps, train_s, cfg.time_budget_s)
        log.progress(progress, step)
        if step % cfg.log_every == 0:
            rec = {"step": step, "loss": round(loss.item(), 5), **{k: round(v.item(), 5) for k, v in parts.items()},
                   "lr": round(cfg.lr * lr_scale, 7),
                   "progress": round(progress, 4), "train_s": round(train_s, 1)}
            history.append(rec)
            log(json.dumps(rec))
            log.sync(history)
            log.progress(progress, step, rec["loss"])
        while evals and progress >= evals[0] - 1e-9:
            evals.pop(0)
            te = time.time()
            best = select_weights(step, model, ema,
                                  lambda m: {"val_accuracy": val_accuracy(ClassifyHead(m, proc), val_recs)},
                                  "val_accuracy", best, history, log)
            log.sync(history)
            t_eval += time.time() - te
    model.load_state_dict(best.pop("state"))
    model.eval()
    save_model_dir(model.to("cpu"), proc, out / "model")
    finish_model_dir(model, out / "model")
    _fit_input_check(cfg, train_recs, val_recs, out / "model", log)
    summary = {"steps": step, "train_s": round(time.time() - t0 - t_eval, 1), "best": best,
               "total_s": round(time.time() - t_start, 1)}
    from ...io import write_json

    write_json(out / "val_selection.json", {"summary": summary, "history": history})
    log("# best " + json.dumps(best))
    log(f"# done: {step} steps, {summary['total_s']}s total")
    log.close(history)
    return summary
