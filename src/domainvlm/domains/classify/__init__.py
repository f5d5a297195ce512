"""The generic labelled-collection domain: any ImageFolder / CSV / JSONL of labelled images -> an expert.

Sources (sources.py) and a taxonomy (domainvlm.taxonomy; derived from the label names when none is given)
-> en/zh instruction records (instruct.py) -> train (the generic trainer, or the recipe in recipe.py) -> eval
(metrics.py) -> every front end answers through the constrained head over the taxonomy (head.py).
"""

from __future__ import annotations

from pathlib import Path

from .. import Domain, register

TASK = "classify"
HEAD = "classify"
_TAXONOMIES: dict = {}  # taxonomies read in this process, by name (metrics and in-training eval use them)


def remember(tax):
    _TAXONOMIES[tax.name] = tax
    return tax


def known_taxonomy(name: str):
    return _TAXONOMIES.get(name)


def resolve_taxonomy(spec, items, default_name: str, near: Path | None = None):
    """``spec``: a Taxonomy, a YAML/JSON file or a model folder; None: ``taxonomy.yaml`` beside the data,
    else derived from the labels in the data."""
    from ...taxonomy import Taxonomy, load
    from .sources import derive_taxonomy

    if isinstance(spec, Taxonomy):
        return spec, spec.name
    if spec:
        return load(spec), str(spec)
    for name in ("taxonomy.yaml", "taxonomy.yml", "taxonomy.json"):
        if near is not None and (near / name).is_file():
            return load(near / name), str(near / name)
    return derive_taxonomy(items, default_name), "derived from the label names"


def read_source(path, taxonomy=None, langs=("en", "zh"), seed: int = 0, explain: bool = True, image_root=None,
                split=None, **_ignored):
    """Domain hook: a labelled collection -> classify records (of one split when ``split`` is given)."""
    from .instruct import build_records
    from .sources import check_images, check_labels, read_items

    p = Path(path).expanduser().resolve()
    items = read_items(p, image_root)
    root = p if p.is_dir() else p.parent
    tax, tax_source = resolve_taxonomy(taxonomy, items, p.name if p.is_dir() else p.stem, root)
    label_sets = check_labels(items, tax, tax_source)
    check_images(items)
    remember(tax)
    recs = build_records(items, label_sets, tax, langs, seed, explain, source=str(p))
    return [r for r in recs if r.meta.get("split") == split] if split else recs


def sniff(path) -> bool:
    from .sources import is_image_folder, is_label_list

    p = Path(path)
    return is_image_folder(p) or is_label_list(p)


def _augment(record, images, name):
    """``augment=domain``: flips, quarter turns, crops, brightness/contrast; drawn from torch's RNG, which the
    trainer's dataset seeds per item (so resumed runs draw the same)."""
    import random

    import torch

    from .augment import augment_image

    rng = random.Random(int(torch.randint(0, 2**31, ())))
    return [augment_image(im, rng) for im in images]


def _head_factory(model, processor, model_dir=None):
    from .head import ClassifyHead

    return ClassifyHead(model, processor)


def _score(records, answers):
    from .metrics import score

    return score(records, answers)


def _artifacts(metrics, out_path):
    from .metrics import eval_artifacts

    eval_artifacts(metrics, out_path)


def _prepare_model(model, records, data_path=None):
    from .model_dir import prepare_model

    return prepare_model(model, records, data_path)


def _finish_model_dir(model, folder, records=None):
    from .model_dir import finish_model_dir

    finish_model_dir(model, folder, records)


def _write_beside_records(records, out_dir):
    from .model_dir import taxonomy_for_records

    taxonomy_for_records(records).save(out_dir)


class _Recipe:
    """The training recipe (recipe.py), imported only when used."""

    @staticmethod
    def config_class():
        from .recipe import ClassifyExpertConfig

        return ClassifyExpertConfig

    @staticmethod
    def train(cfg):
        from .recipe import train_classify_expert

        return train_classify_expert(cfg)


register(Domain(name=TASK, score=_score, sniff=sniff, read_source=read_source, answer_heads={HEAD: _head_factory},
                augment=_augment, eval_artifacts=_artifacts,
                extra={"augmentations": ("domain",), "prepare_model": _prepare_model,
                       "finish_model_dir": _finish_model_dir, "write_beside_records": _write_beside_records, "recipe": _Recipe}))
