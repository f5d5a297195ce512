"""Per-class prior on a fab-taxonomy model's answer: does adding a log-prior b_k to every diagnosis line that
names new class k (and choosing the most probable line) trade precision for recall where a class is missed?

    python bench/fab_prior.py MODEL_DIR --new-val runs/fab-data-n200/val.npz --new-test runs/fab-data-n200/test.npz \
        --old ../shared/data/mixedwm38/mixedwm38_trainval.npz --old ../shared/data/wm811k/wm811k_trainval.npz \
        [--cache runs/fab-prior.npz] [--grid 0,0.5,1,1.5,2,3] [--tta]

Scores every valid line of every map once (new val, new test, old val sets; cached in ``--cache``), then, on
val only (new val F1 and the old val sets' exact match, the fab recipe's penalised selection score), picks
the prior per new class from ``--grid`` one class at a time (coordinate ascent, two passes), and reports the
held-back test once with the chosen prior against the greedy answer and the prior-free line argmax.
Prints tables; CPU or GPU (whichever torch sees).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch

NEW = ("Reticle-Repeat", "Probe-Card", "Notch-Cluster")


@torch.no_grad()
def score_bank(head, bank, bs: int, lang: str = "en") -> tuple[np.ndarray, list[tuple]]:
    """(maps, lines) float32 line log-probs and the greedy answers, questions in ``lang`` chosen as
    expert.evaluate does (bench/wafer_lang.py asks in both languages)."""
    from domainvlm.domains.wafer.confidence import line_logprobs
    from domainvlm.domains.wafer.expert_data import PixelMaker
    from domainvlm.domains.wafer.instruct import QUESTIONS

    px, rng = PixelMaker(head.processor, head.model.device), random.Random(0)
    lps, greedy = [], []
    for s in range(0, len(bank), bs):
        e = min(len(bank), s + bs)
        msgs = [[{"role": "user", "content": "<image>\n" + rng.choice(QUESTIONS[lang])}] for _ in range(s, e)]
        pv, g = px(bank.canvas[s:e])
        state: dict = {}
        greedy += [tuple(d or ()) for d in head.diagnose(pv, g, [head.prompt_ids(m) for m in msgs],
                                                         [lang] * (e - s), state=state)]
        lps.append(line_logprobs(head, state, [lang] * (e - s)).float().cpu().numpy())
        print(f"  {bank.source}: {e}/{len(bank)}", flush=True)
    return np.concatenate(lps), greedy


@torch.no_grad()
def score_bank_tta(head, ws, size: int, bs: int) -> tuple[np.ndarray, list[tuple]]:
    """As score_bank with 8-view test-time augmentation (eval --tta): the line log-probs are the log of the
    views' mean distribution and the answer is its best line."""
    from domainvlm.domains.wafer.batch_load import MapCanvas
    from domainvlm.domains.wafer.confidence import tta_logprobs
    from domainvlm.domains.wafer.instruct import QUESTIONS

    rng, lps = random.Random(0), []
    sets = [tuple(s) for s in head.lines.sets]
    for s in range(0, len(ws.maps), bs):
        e = min(len(ws.maps), s + bs)
        msgs = [[{"role": "user", "content": "<image>\n" + rng.choice(QUESTIONS["en"])}] for _ in range(s, e)]
        ims = [MapCanvas(np.asarray(m), size) for m in ws.maps[s:e]]
        lps.append(tta_logprobs(head, ims, [head.prompt_ids(m) for m in msgs], ["en"] * (e - s)).float().cpu().numpy())
        print(f"  tta {ws.source}: {e}/{len(ws.maps)}", flush=True)
    lp = np.concatenate(lps)
    return lp, [sets[i] for i in lp.argmax(-1)]


def load(args):
    from domainvlm.domains.wafer.expert_data import MapBank
    from domainvlm.domains.wafer.head import WaferHead
    from domainvlm.domains.wafer.labelled import load_labelled_npz
    from domainvlm.domains.wafer.sources import load_wafer_file
    from domainvlm.domains.wafer.taxonomy import for_model_dir
    from domainvlm.models.loader import load_model

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model, proc = load_model(args.model, device=dev, dtype="bfloat16" if dev == "cuda" else "float32")
    tax = for_model_dir(args.model)
    head = WaferHead(model.eval(), proc, tax)
    from domainvlm.domains.wafer.expert_data import class_names

    classes = class_names(tax)
    size = model.config.domainvlm.get("image_size", 224)
    banks = {"new-val": load_labelled_npz(args.new_val, tax), "new-test": load_labelled_npz(args.new_test, tax)}
    for path in args.old:
        ws = load_wafer_file(path).select("val")
        banks[ws.source] = ws
    out = {}
    for name, ws in banks.items():
        if args.tta:
            lp, greedy = score_bank_tta(head, ws, size, max(1, args.batch // 8))
        else:
            lp, greedy = score_bank(head, MapBank(ws, size, dev, name, classes, tax), args.batch)
        out[name] = {"lp": lp, "greedy": greedy, "gold": [tuple(d) for d in ws.defects], "taxonomy": ws.taxonomy}
    return head, tax, out


def metrics(data, preds, tax) -> dict:
    from domainvlm.domains.wafer.metrics import added_class_f1, wafer_metrics

    m = wafer_metrics(data["gold"], list(preds), data["taxonomy"], tax)
    res = {k: m[k] for k in ("exact_match", "macro_f1")}
    if data["taxonomy"] == "custom":
        res |= added_class_f1(m, tax)
    return res


def choose(data, sets, member, bias) -> list[tuple]:
    return [sets[i] for i in (data["lp"] + member @ bias).argmax(-1)]


def val_score(res: dict, base: dict, penalty: float = 5.0, limit: float = 0.25) -> float:
    """The fab recipe's selection score: mean(MixedWM38 EM, WM-811K macro-F1, new F1) - penalty x EM drop."""
    key = {"mixedwm38": "exact_match", "wm811k": "macro_f1", "new-val": "new_class_f1"}
    s = sum(res[k][v] for k, v in key.items() if k in res) / sum(k in res for k in key)
    over = sum(max(0.0, 100 * (base[k]["exact_match"] - res[k]["exact_match"]) - limit)
               for k in ("mixedwm38", "wm811k") if k in res)
    return s - penalty * over / 100


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--new-val", required=True)
    p.add_argument("--new-test", required=True)
    p.add_argument("--old", action="append", default=[])
    p.add_argument("--cache", default="")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--grid", default="0,0.25,0.5,0.75,1,1.5,2,3")
    p.add_argument("--tta", action="store_true", help="8 dihedral views per map (as eval --tta); 'greedy' rows "
                   "are then the views' best line")
    a = p.parse_args(argv)
    from domainvlm.domains.wafer.head import WaferHead  # noqa: F401  (import check before minutes of work)
    from domainvlm.domains.wafer.metrics import added_class_f1  # noqa: F401

    cache = Path(a.cache) if a.cache else None
    if cache and cache.exists():
        from domainvlm.domains.wafer.taxonomy import for_model_dir
        from domainvlm.models.loader import load_model

        z = np.load(cache, allow_pickle=False)
        tax = for_model_dir(a.model)
        model, proc = load_model(a.model, device="cpu", dtype="float32")
        from domainvlm.domains.wafer.head import WaferHead as H

        head = H(model.eval(), proc, tax)
        data = {}
        for name in [str(n) for n in z["names"]]:
            data[name] = {"lp": z[f"{name}/lp"], "greedy": [tuple(x.split("+")) if x else () for x in z[f"{name}/greedy"]],
                          "gold": [tuple(x.split("+")) if x else () for x in z[f"{name}/gold"]],
                          "taxonomy": str(z[f"{name}/taxonomy"])}
    else:
        head, tax, data = load(a)
        if cache:
            flat = {"names": np.array(list(data))}
            for n, d in data.items():
                flat |= {f"{n}/lp": d["lp"], f"{n}/greedy": np.array(["+".join(x) for x in d["greedy"]]),
                         f"{n}/gold": np.array(["+".join(x) for x in d["gold"]]), f"{n}/taxonomy": np.array(d["taxonomy"])}
            np.savez(cache, **flat)
    sets = [tuple(s) for s in head.lines.sets]
    names = list(tax.names)
    member = np.array([[float(c in s) for c in names] for s in sets], np.float32)  # (lines, classes)
    new = [c for c in NEW if c in names]
    grid = [float(x) for x in a.grid.split(",")]
    zero = np.zeros(len(names), np.float32)
    val = [n for n in data if n != "new-test"]
    base = {n: metrics(data[n], data[n]["greedy"], tax) for n in data}
    bias = zero.copy()
    for _ in range(2):
        for c in new:
            best = None
            for b in grid:
                trial = bias.copy()
                trial[names.index(c)] = b
                res = {n: metrics(data[n], choose(data[n], sets, member, trial), tax) for n in val}
                s = val_score(res, base)
                if best is None or s > best[0] + 1e-9:
                    best = (s, b)
            bias[names.index(c)] = best[1]
    chosen = {c: float(bias[names.index(c)]) for c in new}
    rows = [("greedy (as shipped)", {n: base[n] for n in data}),
            ("line argmax, no prior", {n: metrics(data[n], choose(data[n], sets, member, zero), tax) for n in data}),
            (f"line argmax, prior {chosen}", {n: metrics(data[n], choose(data[n], sets, member, bias), tax) for n in data})]
    print("\n| answer | new val F1 (R / P / N) | new test F1 (R / P / N) | MixedWM38 val EM | WM-811K val EM / macro-F1 |")
    print("|---|---|---|---:|---:|")
    for label, r in rows:
        f = lambda k: (f"{r[k]['new_class_f1']:.4f} (" + " / ".join(f"{r[k]['new_class_f1_per_class'][c]:.3f}"  # noqa: E731
                                                                   for c in new) + ")")
        print(f"| {label} | {f('new-val')} | {f('new-test')} | {r.get('mixedwm38', {}).get('exact_match', float('nan')):.4f} | "
              f"{r.get('wm811k', {}).get('exact_match', float('nan')):.4f} / {r.get('wm811k', {}).get('macro_f1', float('nan')):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
