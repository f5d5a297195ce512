"""The one trainer: any loader-readable model (or a fresh compact one), full or LoRA, on record JSONL.

accelerate handles devices, bf16, gradient accumulation and DDP/FSDP when started with `accelerate launch`.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import to_dict
from ..errors import UserError
from ..io import resolve_path, write_json
from ..models.chat_format import collate
from .checkpoint import checkpoint_step, load_checkpoint_state, recover_checkpoint, restore_rng, rng_state
from .checkpoint import save_checkpoint, save_model_dir
from .config import TrainConfig
from .config_checks import check_train
from .dataset import RecordDataset, load_records, split_records
from .dist_state import all_ranks, gather_optimizer, load_optimizer, param_names, rank_and_world, saveable
from .plots import plot_curves
from .preflight import check_attention, check_lengths, check_resume
from .speed import load_attn, rank_weight, step_loss, train_context
from .tracking import make_trackers, parse_report_to
from .tracking import finish as finish_trackers
from .tracking import start as start_trackers
from .tuning import apply_memory_options, apply_tuning, count_trainable


def _one_thread(_):
    torch.set_num_threads(1)  # loader workers only preprocess; extra BLAS threads starve the training step


def _corpus(records):
    for r in records:
        for m in r.messages:
            yield m["content"].replace("<image>", "")


def _load_or_build(cfg: TrainConfig, train_records, out: Path, ckpt: Path | None, device="cpu", precision="fp32"):
    from ..models.loader import load_model

    # LoRA never updates base weights: keep them in bf16 (half the memory); full fine-tuning keeps fp32 masters.
    # bitsandbytes quantizes while loading, so a quantized base loads straight onto its training device.
    kw = dict(device=str(device) if cfg.quantization else "cpu", quantization=cfg.quantization,
              dtype="bfloat16" if cfg.mode == "lora" and precision == "bf16" else "float32",
              trust_remote_code=cfg.trust_remote_code, attn_implementation=load_attn(cfg),
              min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    if (cfg.min_pixels or cfg.max_pixels) and not cfg.model:
        raise UserError("config: min_pixels/max_pixels apply to a base model (model=DIR); the compact model's "
                        "resolution is compact.image_size")
    if ckpt is not None and cfg.mode == "lora":
        from peft import PeftModel

        base, proc = load_model(cfg.model, **kw)
        return PeftModel.from_pretrained(base, str(ckpt / "model"), is_trainable=True), proc
    if ckpt is not None:
        model, proc = load_model(ckpt / "model", device="cpu", dtype="float32",
                                 attn_implementation=load_attn(cfg))
        return apply_tuning(model, cfg), proc
    if cfg.model:
        model, proc = load_model(cfg.model, **kw)
    else:
        from ..models.compact import build_compact

        model, proc = build_compact(out / "init", _corpus(train_records), cfg.compact, cfg.seed)
    return apply_tuning(model, cfg), proc


def _recover(ckpt: Path, keep: int) -> None:
    """--resume after a kill mid-save: one process puts the newest complete checkpoint back, the others wait."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    ps = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # the one Accelerator() reuses below
    found = recover_checkpoint(ckpt, keep) if ps.is_main_process else None
    ps.wait_for_everyone()
    if (found if ps.is_main_process else checkpoint_step(ckpt)) is None:
        raise UserError(f"--resume: no checkpoint in {ckpt}")


def _check_fsdp(acc, cfg: TrainConfig) -> None:
    """What FSDP here cannot do (docs/multi_gpu.md), refused before the model is loaded or anything is written."""
    if acc.distributed_type == DistributedType.FSDP and cfg.quantization:
        raise UserError(f"quantization={cfg.quantization} (QLoRA) is not sharded by FSDP here: use DDP "
                        "(configs/accelerate_ddp.yaml)")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, model=None, processor=None,
          on_step=None) -> dict:
    """Train per ``cfg``. model/processor: an in-memory base instead of cfg.model (benchmarks);
    on_step(step, loss, batch): called after every optimizer step (timing hooks)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    check_train(cfg)  # every value, before anything loads or is written
    if not cfg.data:
        raise UserError("train: no data given (data=path/to/train.jsonl)")
    if cfg.attn_implementation == "varlen" and not cfg.packing:
        raise UserError("attn_implementation=varlen attends within packed samples: set packing=true too")
    check_attention(cfg)
    out = Path(cfg.output_dir)
    ckpt = out / "checkpoint"
    if cfg.save_total_limit < 1:
        raise UserError(f"save_total_limit: must be at least 1, got {cfg.save_total_limit}")
    if resume:  # a kill mid-swap leaves .old/.tmp
        _recover(ckpt, cfg.save_total_limit)
        check_resume(cfg, ckpt, out)
    report_to = parse_report_to(cfg.report_to)  # a missing tracker package fails now, not after loading
    set_seed(cfg.seed)
    records = load_records(cfg.data)
    if not records:
        raise UserError(f"{cfg.data}: no records")
    train_recs, val_recs = split_records(records, cfg)
    if not val_recs and cfg.select_metric != "val_loss":
        raise UserError(f"select_metric={cfg.select_metric} needs validation records: set val_fraction > 0 or "
                        "val_data (without them the weights are selected on the train loss)")
    tasks = lambda rs: {r.labels.get("task") for r in rs} - {None}  # noqa: E731
    if cfg.val_data and tasks(val_recs) - tasks(train_recs) and tasks(train_recs):  # selecting on another task
        raise UserError(f"{cfg.val_data}: val records of task {', '.join(sorted(tasks(val_recs) - tasks(train_recs)))}"
                        f", which {cfg.data} does not train (its tasks: {', '.join(sorted(tasks(train_recs)))})")
    if cfg.eval_samples and val_recs:  # the task metric needs labels: say so now, not at the first eval
        from ..evaluate.runner import task_of

        try:
            task_of(val_recs[:cfg.eval_samples])
        except UserError as e:
            raise UserError(f"{cfg.val_data or cfg.data}: {e} (or set eval_samples=0 for the val loss only)") from None
    base_dir = resolve_path(cfg.data).parent
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    # AcceleratorState is a process-wide singleton that refuses a second precision; each train() call (a
    # two-stage recipe, a notebook, the test suite) sets its own, so drop the old one (keep PartialState: it holds
    # the distributed process group).
    AcceleratorState._reset_state()
    acc = Accelerator(mixed_precision={"fp32": "no"}.get(precision, precision),
                      gradient_accumulation_steps=cfg.grad_accum,
                      log_with=make_trackers(report_to, out, out.name) or None)
    _check_fsdp(acc, cfg)
    made = not out.exists()
    try:  # a set-up mistake leaves no run folder behind (the compact model is built into out/init)
        if model is not None:
            model, proc = apply_tuning(model, cfg), processor
        else:
            model, proc = _load_or_build(cfg, train_recs, out, ckpt if resume else None, acc.device, precision)
        check_lengths(train_recs + val_recs[:512], proc, cfg, base_dir)  # needs the processor: after loading
    except UserError:
        if made and acc.is_main_process:
            shutil.rmtree(out, ignore_errors=True)
        raise
    out.mkdir(parents=True, exist_ok=True)
    hooks = _domain_hooks(train_recs)
    if "prepare_model" in hooks:  # before any eval, so in-training eval answers as the saved model will
        hooks["prepare_model"](model, train_recs, cfg.data)
    apply_memory_options(model, cfg)
    n_train, n_total = count_trainable(model)
    tok = proc.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ds = RecordDataset(train_recs, proc, cfg.max_length, base_dir, augment=cfg.augment, seed=cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    dl = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, generator=g, num_workers=cfg.num_workers,
                    collate_fn=lambda b: collate(b, pad), drop_last=len(ds) > cfg.batch_size,
                    persistent_workers=cfg.num_workers > 0, worker_init_fn=_one_thread)
    n_proc = acc.num_processes  # each optimizer step consumes one batch per process
    steps_per_epoch = max(1, len(dl) // (cfg.grad_accum * n_proc))
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                            fused=torch.cuda.is_available())
    # accelerate steps a prepared scheduler once per process per optimizer step: count in those units
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, int(cfg.warmup_ratio * total) * n_proc, total * n_proc,
                                                        min_lr_rate=cfg.min_lr_ratio)
    state = {"step": 0, "best": None, "history": []}
    names = param_names(model, opt)
    if resume:
        state, optim_state = load_checkpoint_state(ckpt)
        load_optimizer(acc, model, opt, optim_state["optimizer"], names, prepared=False)
        sched.load_state_dict(optim_state["scheduler"])
    model, opt, dl, sched = acc.prepare(model, opt, dl, sched)
    if resume:  # under FSDP: the optimizer's parameters are shards only now
        load_optimizer(acc, model, opt, optim_state["optimizer"], names, prepared=True)
    autocast_lora = cfg.mode == "lora" and precision in ("bf16", "fp16") and not cfg.lora_fp32_inputs
    if acc.is_main_process:
        write_json(out / "train_config.json", to_dict(cfg))
    start_trackers(acc, out, to_dict(cfg))
    if acc.is_main_process:
        print(f"training {n_train:,} of {n_total:,} parameters on {len(train_recs):,} records "
              f"({len(val_recs):,} val), {total} steps, device {acc.device}, {precision}")
        if not val_recs:
            print("no validation records: no val step; model/ keeps the weights of the lowest train loss "
                  "(mean over the steps since the previous eval)")
    if resume:  # last, so nothing in the set-up above draws from the restored streams
        restore_rng(optim_state, *rank_and_world())
    bar = tqdm(total=total, initial=state["step"], desc="train", disable=not (progress and acc.is_main_process))
    epoch = state["step"] // steps_per_epoch
    model.train()
    running, n_run = 0.0, 0
    since_eval = []  # the train losses that select the weights when nothing is held out
    while state["step"] < total:
        if hasattr(dl, "set_epoch"):
            dl.set_epoch(epoch)
        g.manual_seed(cfg.seed + epoch)
        ds.set_epoch(epoch)
        skip = (state["step"] % steps_per_epoch) * cfg.grad_accum if epoch == state["step"] // steps_per_epoch else 0
        # resume mid-epoch: replay the same shuffled order; the batches already done are skipped in the batch
        # sampler, so their images are never loaded
        for batch in (acc.skip_first_batches(dl, skip) if skip else dl):
            with acc.accumulate(model), train_context(model, cfg, autocast_lora):
                loss = step_loss(model, batch, cfg) * rank_weight(acc, batch)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            # the logged loss is the mean over processes, so multi-GPU curves compare with one GPU's
            since_eval.append((acc.reduce(loss.detach(), "mean") if acc.num_processes > 1 else loss).item())
            running += since_eval[-1]
            n_run += 1
            if not acc.sync_gradients:
                continue
            state["step"] += 1
            step = state["step"]
            bar.update(1)
            if on_step is not None:
                on_step(step, loss, batch)
            if step % cfg.log_every == 0 or step == total:
                rec = {"step": step, "loss": running / n_run, "lr": sched.get_last_lr()[0]}
                state["history"].append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
                acc.log({"train/loss": rec["loss"], "train/lr": rec["lr"]}, step=step)
                running, n_run = 0.0, 0
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == total:
                train_loss, since_eval = sum(since_eval) / len(since_eval), []
                _evaluate(acc, model, proc, val_recs, base_dir, cfg, state, out, pad, train_loss)
                model.train()
            if (cfg.save_every and step % cfg.save_every == 0) or step == total:
                # every rank: gathering FSDP shards (and each rank's RNG) is a collective
                to_save, optim_sd = saveable(acc, model), gather_optimizer(acc, model, opt)
                rngs = all_ranks(rng_state())
                if acc.is_main_process:
                    save_checkpoint(to_save, proc, optim_sd, sched, state, ckpt, cfg.save_total_limit, rngs,
                                    to_dict(cfg))
                plot_curves(state["history"], out / "loss_curve.png")
            if step >= total:
                break
        epoch += 1
    bar.close()
    finish_trackers(acc)  # not acc.end_training(): that also ends the process group the saves below need
    final = state["history"][-1] if state["history"] else {}
    acc.wait_for_everyone()  # all ranks must see the same out/model before deciding to gather
    if not (out / "model").exists():  # no eval improved anything: ship the last weights
        to_save = saveable(acc, model)
        if acc.is_main_process:
            save_model_dir(to_save, proc, out / "model")
    if acc.is_main_process and "finish_model_dir" in hooks:
        hooks["finish_model_dir"](acc.unwrap_model(model), out / "model", train_recs)
    if acc.is_main_process:
        _card(cfg, out / "model", state["best"])
        write_json(out / "train_summary.json", {"steps": state["step"], "best": state["best"], "last": final,
                                                "trainable_params": n_train, "total_params": n_total})
    return {"steps": state["step"], "best": state["best"], "last": final, "model_dir": str(out / "model")}


def _card(cfg: TrainConfig, folder: Path, best: dict | None) -> None:
    """The saved model's HF card: front matter (base, licence, data, best val metrics) and a short text."""
    from ..models.card import base_license, base_model_id, front_matter, training_body, write_card

    val = Path(cfg.val_data or cfg.data).stem + (" val" if not cfg.val_data else "")
    best = None if best and "train_loss" in best else best  # selected on the train loss: no val result to show
    tags = [cfg.mode] + (["qlora"] if cfg.quantization else [])
    fm = front_matter(folder.parent.name, base_model_id(cfg.model), base_license(cfg.model),
                      datasets=[Path(cfg.data).stem], results=[(val, best or {})], tags=tags,
                      adapter=(folder / "adapter_config.json").exists())
    write_card(folder, fm, training_body(folder.parent.name, cfg.model, cfg.data, cfg.mode, best))


def _domain_hooks(records) -> dict:
    """Model hooks of the records' domain (``Domain.extra`` prepare_model / finish_model_dir; classify: its answer
    head in the config, taxonomy.json in the folder)."""
    from ..domains import all_domains

    tasks = {r.labels.get("task") for r in records}
    d = next((d for d in all_domains() if tasks == {d.name}), None)
    return {k: d.extra[k] for k in ("prepare_model", "finish_model_dir") if d and k in d.extra}


@torch.no_grad()
def _evaluate(acc, model, proc, val_recs, base_dir, cfg, state, out, pad, train_loss):
    if not val_recs:  # nothing held out: select on the train loss since the previous eval
        rec = {"step": state["step"], "train_loss": train_loss}
        if acc.is_main_process:
            print(json.dumps(rec))
        return _select(acc, model, proc, state, out, rec, "train_loss")
    model.eval()
    ds = RecordDataset(val_recs[:512], proc, cfg.max_length, base_dir)
    dl = DataLoader(ds, batch_size=cfg.batch_size, collate_fn=lambda b: collate(b, pad))
    tot, n = 0.0, 0
    for batch in dl:
        batch = {k: v.to(acc.device) for k, v in batch.items()}
        with acc.autocast():
            tot += model(**batch).loss.item() * batch["input_ids"].shape[0]
        n += batch["input_ids"].shape[0]
    rec = {"step": state["step"], "val_loss": tot / max(n, 1)}
    fsdp = acc.distributed_type == DistributedType.FSDP
    if acc.is_main_process and cfg.eval_samples and fsdp:
        print("eval: generation metrics skipped under FSDP (sharded weights: rank 0 cannot decode alone)")
    if acc.is_main_process and cfg.eval_samples and not fsdp:
        from ..evaluate.runner import evaluate_records
        from ..inference.engine import Engine, Sampling

        eng = Engine(model=acc.unwrap_model(model), processor=proc)
        metrics, _ = evaluate_records(eng, val_recs[:cfg.eval_samples], base_dir, cfg.batch_size,
                                      Sampling(max_new_tokens=cfg.eval_max_new_tokens, temperature=0.0), progress=False)
        for k in ("exact_match", "macro_f1", "unparsed_rate", "bleu_4", "ce_f1_micro"):
            if k in metrics:
                rec[k] = metrics[k]
    state["history"].append(rec)
    acc.log({f"val/{k}": v for k, v in rec.items() if k != "step" and v is not None}, step=state["step"])
    if acc.is_main_process:
        print(json.dumps(rec))
    _select(acc, model, proc, state, out, rec, cfg.select_metric)


def _select(acc, model, proc, state, out, rec, key):
    """Save out/model when ``rec[key]`` beats the best so far (losses: lower is better)."""
    to_save = saveable(acc, model) if acc.distributed_type == DistributedType.FSDP else None  # a collective
    if acc.is_main_process:
        val = rec.get(key)
        if val is not None:
            best = (state["best"] or {}).get(key)  # None too when a resumed run selects on another metric
            better = best is None or (val < best if key.endswith("_loss") else val > best)
            if better:
                state["best"] = dict(rec)
                save_model_dir(to_save or acc.unwrap_model(model), proc, out / "model")
