"""Hugging Face model cards: README.md with YAML front matter (license, base_model, pipeline_tag, datasets,
metrics and their values from our eval as ``model-index``) for every model we train or export.

An existing card's text is kept: only its front matter is (re)written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from ..io import atomic_open

# metric keys of our eval -> (HF metric id, display name)
METRICS = {"exact_match": ("exact_match", "exact match"), "macro_f1": ("f1", "macro F1"),
           "pattern_macro_f1": ("f1", "pattern macro F1"), "bleu_4": ("bleu", "BLEU-4"),
           "meteor": ("meteor", "METEOR"), "rouge_l": ("rouge", "ROUGE-L"), "cider": ("cider", "CIDEr"),
           "ce_f1_micro": ("f1", "clinical efficacy micro F1"), "val_loss": ("loss", "validation loss")}
_FM = re.compile(r"\A---\n.*?\n---\n?", re.S)


def read_front_matter(readme: Path) -> dict:
    p = Path(readme)
    if not p.exists():
        return {}
    m = _FM.match(p.read_text(encoding="utf-8"))
    try:
        d = yaml.safe_load(m.group(0).strip("-\n")) if m else {}
    except yaml.YAMLError:
        return {}
    return d if isinstance(d, dict) else {}


def base_model_id(base: str | Path | None) -> str | None:
    """The base's name for ``base_model``: a Hub id recorded in its config (``_name_or_path`` like
    'Qwen/Qwen2-VL-2B-Instruct') or its own card, else the local folder's name."""
    if not base:
        return None
    p = Path(base)
    own = read_front_matter(p / "README.md").get("model_id")
    if isinstance(own, str):
        return own
    try:
        rec = json.loads((p / "config.json").read_text(encoding="utf-8")).get("_name_or_path", "")
    except (OSError, json.JSONDecodeError):
        rec = ""
    if isinstance(rec, str) and rec.count("/") == 1 and not Path(rec).exists():
        return rec
    return p.resolve().name


def base_license(base: str | Path | None) -> str:
    """The base's licence from its card; Apache-2.0 for models built from scratch (ours); 'other' when a
    base says nothing (check its terms)."""
    if not base:
        return "apache-2.0"
    return str(read_front_matter(Path(base) / "README.md").get("license") or "other")


def model_index(name: str, results: list[tuple[str, dict]]) -> list[dict]:
    """results: [(dataset name, {our metric key: value})] -> HF model-index."""
    out = []
    for dataset, metrics in results:
        ms = [{"type": METRICS[k][0], "name": METRICS[k][1], "value": round(float(v), 4)}
              for k, v in metrics.items() if k in METRICS and isinstance(v, (int, float))]
        if ms:
            slug = re.sub(r"[^a-z0-9]+", "-", dataset.lower().removesuffix(" val")).strip("-")
            out.append({"task": {"type": "image-text-to-text"}, "dataset": {"name": dataset, "type": slug},
                        "metrics": ms})
    return [{"name": name, "results": out}] if out else []


def front_matter(name: str, base_model: str | None = None, license: str = "apache-2.0",
                 datasets=(), results=(), tags=(), adapter: bool = False) -> dict:
    fm = {"license": license}
    if base_model:
        fm["base_model"] = base_model
    fm.update({"pipeline_tag": "image-text-to-text", "library_name": "peft" if adapter else "transformers",
               "tags": ["domainvlm", *tags]})
    if datasets:
        fm["datasets"] = list(dict.fromkeys(datasets))
    idx = model_index(name, list(results))
    if idx:
        fm["metrics"] = sorted({m["type"] for r in idx[0]["results"] for m in r["metrics"]})
        fm["model-index"] = idx
    return fm


def write_card(folder: str | Path, fm: dict, body: str | None = None) -> Path:
    """Write ``folder``/README.md with ``fm`` as its front matter; the existing card's text is kept (else
    ``body``)."""
    p = Path(folder) / "README.md"
    old = p.read_text(encoding="utf-8") if p.exists() else ""
    text = _FM.sub("", old, count=1) if old else ""
    if not text.strip() or _peft_template(text):
        text = body or f"# {fm.get('model-index', [{}])[0].get('name', Path(folder).name)}\n"
    head = yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, width=1000)
    with atomic_open(p, encoding="utf-8") as fh:
        fh.write(f"---\n{head}---\n\n{text.lstrip()}")
    return p


def _peft_template(text: str) -> bool:
    return "[More Information Needed]" in text  # peft's empty card template


def training_body(name: str, base: str | None, data: str, mode: str, best: dict | None) -> str:
    lines = [f"# {name}", "", f"Trained with domainvlm (`domainvlm train`, mode `{mode}`) "
             f"on `{Path(data).name}`" + (f", from `{base}`." if base else ", as a compact model built from scratch."),
             ""]
    if best:
        lines += ["Best validation checkpoint (the one saved here):", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in best.items() if k != "step" and isinstance(v, (int, float))]
    return "\n".join(lines) + "\n"
