"""Does the question's language change the wafer expert's diagnosis? Every val map is scored under an English
and under a Chinese question (the same seeded choice of phrasing per map as `domainvlm eval`), and the table
gives exact match, macro-F1 and accuracy at 95 % coverage for each, and for the two line distributions
combined (a prompt ensemble: one more LM pass per map).

    PYTHONPATH=src python bench/wafer_lang.py ../shared/data/mixedwm38/mixedwm38_trainval.npz \
        ../shared/data/wm811k/wm811k_trainval.npz [--model DIR] [--limit N] [--dump lp.npz]

CPU or GPU (whichever torch sees); line probabilities at T = 1 (the ranking does not depend on T).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from fab_prior import score_bank  # bench/ is on the path when this runs as a script


def row(label: str, source: str, lp: np.ndarray, sets, gold, taxonomy, tax) -> str:
    from domainvlm.domains.wafer.metrics import wafer_metrics

    pred = [sets[i] for i in lp.argmax(-1)]
    m = wafer_metrics(gold, pred, taxonomy, tax)
    conf = np.exp(lp.max(-1) - np.logaddexp.reduce(lp, -1))
    ok = np.array([p == g for p, g in zip(pred, gold)])
    keep = np.argsort(-conf)[: int(round(0.95 * len(conf)))]
    return f"| {source} | {label} | {100 * m['exact_match']:.2f} | {m['macro_f1']:.4f} | {100 * ok[keep].mean():.2f} |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="+", help="MixedWM38 / WM-811K npz files (their val split is scored)")
    p.add_argument("--model", help="model folder (default: the bundled expert)")
    p.add_argument("--limit", type=int, default=0, help="first N val maps of each set only")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dump", help="also save the line log-probs (npz: SOURCE/en, SOURCE/zh)")
    a = p.parse_args(argv)
    from domainvlm.domains.wafer.expert_data import MapBank, class_names
    from domainvlm.domains.wafer.head import WaferHead
    from domainvlm.domains.wafer.sources import load_wafer_file
    from domainvlm.domains.wafer.taxonomy import for_model_dir
    from domainvlm.models.loader import default_model_dir, load_model

    model_dir = a.model or str(default_model_dir())
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model, proc = load_model(model_dir, device=dev, dtype="bfloat16" if dev == "cuda" else "float32")
    tax = for_model_dir(model_dir)
    head = WaferHead(model.eval(), proc, tax)
    size = model.config.domainvlm.get("image_size", 224)
    sets = [tuple(s) for s in head.lines.sets]
    dump = {}
    print("| val set | line chosen from | exact match % | macro-F1 | accuracy at 95 % coverage |")
    print("|---|---|---:|---:|---:|")
    for path in a.data:
        ws = load_wafer_file(path).select("val")
        if a.limit:
            ws.maps, ws.defects = ws.maps[: a.limit], ws.defects[: a.limit]
        bank = MapBank(ws, size, dev, ws.source, class_names(tax), tax)
        lp = {lang: score_bank(head, bank, a.batch, lang)[0] for lang in ("en", "zh")}
        gold = [tuple(d) for d in ws.defects]
        for label, x in (("English question", lp["en"]), ("Chinese question", lp["zh"]),
                         ("both, mean probability", np.logaddexp(lp["en"], lp["zh"]))):
            print(row(label, f"{ws.source} ({len(gold):,})", x, sets, gold, ws.taxonomy, tax), flush=True)
        dump |= {f"{ws.source}/{lang}": v for lang, v in lp.items()}
    if a.dump:
        np.savez(a.dump, **dump)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
