"""The wafer taxonomy as data: 8 MixedWM38 patterns (en/zh names, one-line look), multi-label, none label
Normal, and the 29 published mixtures: 38 answer classes. ``taxonomy.json`` beside this module is the default;
a model folder's own ``taxonomy.json`` (the bundled expert ships the same file) takes precedence.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ...taxonomy import Taxonomy, from_model_dir, load

DEFAULT = Path(__file__).with_name("taxonomy.json")


@lru_cache(maxsize=1)
def default() -> Taxonomy:
    return load(DEFAULT)


def for_model_dir(folder) -> Taxonomy:
    """The model folder's taxonomy, else the default (models trained before taxonomies were stored)."""
    return (from_model_dir(folder) if folder else None) or default()


def for_source(taxonomy=None, model_dir=None) -> Taxonomy:
    """The taxonomy a labelled wafer source is read with (``data build`` / ``eval --taxonomy``): a model
    folder's taxonomy.json; a YAML/JSON file extending ``model_dir``'s taxonomy (the default without one), as
    ``train-expert taxonomy=`` extends its init_model's; without ``taxonomy``, ``model_dir``'s own."""
    from ...taxonomy import extend

    if taxonomy is not None and Path(taxonomy).is_dir():
        return load(taxonomy)
    base = for_model_dir(model_dir)
    return extend(base, taxonomy) if taxonomy is not None else base


def reading(taxonomy=None, model_dir=None) -> tuple[Taxonomy, bool, str | None]:
    """What a labelled source's records are built with (a labels CSV, a labelled npz): :func:`for_source`'s
    taxonomy, whether it goes beyond the 8 patterns, and the file its own classes come from (named by the
    unknown-class message; None for the 8 patterns)."""
    tax = for_source(taxonomy, model_dir)
    own = not is_default(tax)
    return tax, own, str(taxonomy) if taxonomy is not None else (f"{model_dir}/taxonomy.json" if own else None)


def is_default(tax) -> bool:
    """True for the 8-pattern taxonomy (its answers are written as before taxonomies were data)."""
    return tax is None or tax is default() or tax.to_dict() == default().to_dict()
