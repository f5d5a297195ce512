"""Domain registry: everything task-specific lives in ``domainvlm/domains/<name>/`` and is found here.

A domain package registers one :class:`Domain` in its ``__init__.py``; generic packages (data, models, train,
evaluate, inference, serve, webui, commands) look domains up by ``labels.task`` (records), by source content
(``sniff``) or by ``config.domainvlm.answer_head`` (models), and never import a domain module themselves.
Domains are discovered the way cli.py finds commands: every sub-package of this package is imported once;
a domain's own sub-commands live in its ``commands`` sub-package. The contract: docs/architecture.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from ..errors import UserError


@dataclass
class Domain:
    name: str                                   # the records' labels.task value, e.g. "wafer"
    score: Callable | None = None               # (records, answers[, model_dir]) -> metrics dict (eval; a
    #                                             model_dir parameter gets the evaluated model's folder)
    sniff: Callable | None = None               # (path) -> bool: is this source file/folder mine? (data build)
    read_source: Callable | None = None         # (path, **options) -> list[Record] with labels.task == name
    answer_heads: dict = field(default_factory=dict)  # config.domainvlm.answer_head -> factory(model, processor,
    #                                             model_dir) -> AnswerHead (inference/answer_heads.py)
    augment: Callable | None = None             # (record, images, name) -> images (training; the names it
    #                                             knows in extra["augmentations"])
    eval_artifacts: Callable | None = None      # (metrics, out_path) -> None: plots beside metrics.json
    summary: Callable | None = None             # (metrics) -> str: the table eval prints
    load_image: Callable | None = None          # (ref, base_dir, size) -> PIL image | None, for refs it owns
    load_batch: Callable | None = None          # ([(ref, base_dir)], size) -> per ref an image (PIL, or an
    #                                             object with to_pil() its answer head takes as is), a UserError
    #                                             or None (load_image's job): many refs at once (eval, predict)
    extra: dict = field(default_factory=dict)   # anything else: instruct, synth, bench_images, example_images...

_REGISTRY: dict[str, Domain] = {}
_loaded = False


def register(domain: Domain) -> Domain:
    _REGISTRY[domain.name] = domain
    return domain


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.ispkg and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def command_packages() -> list:
    """Each domain's ``commands`` sub-package (same contract as ``domainvlm/commands``), found without
    importing the domain itself beyond its ``__init__``."""
    out = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.ispkg and not info.name.startswith("_") and importlib.util.find_spec(
                f"{__name__}.{info.name}.commands") is not None:
            out.append(importlib.import_module(f"{__name__}.{info.name}.commands"))
    return out


def all_domains() -> list[Domain]:
    """By name, whatever was imported first: ``sniff`` asks them in this order."""
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get(name: str) -> Domain:
    _load_all()
    if name not in _REGISTRY:
        raise UserError(f"unknown task {name!r} (known: {', '.join(sorted(_REGISTRY)) or 'none'})")
    return _REGISTRY[name]


def answer_head(name: str) -> Callable:
    """The head factory registered under ``name`` by any domain."""
    for d in all_domains():
        if name in d.answer_heads:
            return d.answer_heads[name]
    known = sorted(h for d in all_domains() for h in d.answer_heads)
    raise UserError(f"model config: unknown answer_head {name!r} (known: {', '.join(known) or 'none'})")


def default_question(head: str | None) -> str | None:
    """The question asked of every input when the user gives none (predict over a folder or a map file, ask
    without one): ``extra["default_question"]`` of the domain registering answer head ``head``
    (models.loader.answer_head_name reads it from a model folder); None without a head."""
    if not head:
        return None
    return next((d.extra.get("default_question") for d in all_domains() if head in d.answer_heads), None)


def sniff(path) -> Domain | None:
    """The first domain whose ``sniff`` claims this source."""
    for d in all_domains():
        if d.sniff is not None and d.sniff(path):
            return d
    return None
