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
