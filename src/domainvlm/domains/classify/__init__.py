"""The generic labelled-collection domain: any ImageFolder / CSV / JSONL of labelled images -> an expert.

Sources (sources.py) and a taxonomy (domainvlm.taxonomy; derived from the label names when none is given)
-> en/zh instruction records (instruct.py) -> train (the generic trainer, or the recipe in recipe.py) -> eval
(metrics.py) -> every front end answers through the constrained head over the taxonomy (head.py).
"""

from __future__ import annotations

from pathlib import Path

from .. import Domain, register
from .collection import HEAD, TASK, read_source


def sniff(path) -> bool:
    from .label_list import is_label_list
    from .sources import is_image_folder

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
    from ...inference.confidence import load
    from .head import ClassifyHead

    from .input_check import load as load_check

    head = ClassifyHead(model, processor)
    head.calibration = load(model_dir)
    head.input_check = load_check(model_dir)
    return head


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


def _write_beside_records(records, out_dir, taxonomy=None):  # the records' own taxonomy, as they were read
    from .model_dir import taxonomy_for_records

    taxonomy_for_records(records).save(out_dir)


class _Recipe:
    """The training recipe (recipe.py), imported only when used."""

    @staticmethod
    def config_class():
        from .recipe import ClassifyExpertConfig

        return ClassifyExpertConfig

    @staticmethod
    def check(cfg):
        from .recipe import _check

        _check(cfg)

    @staticmethod
    def train(cfg):
        from .recipe import train_classify_expert

        return train_classify_expert(cfg)


register(Domain(name=TASK, score=_score, sniff=sniff, read_source=read_source, answer_heads={HEAD: _head_factory},
                augment=_augment, eval_artifacts=_artifacts,
                extra={"augmentations": ("domain",), "prepare_model": _prepare_model,
                       "default_question": "What class does this image belong to?",  # predict / ask without one
                       "gold_labels": lambda r: tuple(r.labels.get("labels") or ()),
                       "finish_model_dir": _finish_model_dir, "write_beside_records": _write_beside_records, "recipe": _Recipe,
                       "model_files": ("input_check.safetensors",)}))  # input_check.FILE (that module loads torch)
