"""A classify model folder: ``config.domainvlm.answer_head = classify`` and the taxonomy beside the weights.

Trainers call :func:`prepare_model` before training (so in-training evaluation already answers through the
head) and :func:`finish_model_dir` on the saved folder (writes ``taxonomy.json``, which the head reads).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import UserError
from ...taxonomy import FILE_NAME, load
from .collection import HEAD, known_taxonomy, remember


def taxonomy_for_records(records, data_path=None):
    """The records' taxonomy: read in this process, else ``taxonomy.json`` beside the data (data build writes
    it), else derived from the labels the records carry."""
    from ...taxonomy import Taxonomy, TaxonomyClass

    names = sorted({r.labels.get("taxonomy") or "classify" for r in records})
    if len(names) > 1:  # e.g. data build --source folder/ --source other.csv, each with its derived classes
        raise UserError(f"the records name {len(names)} taxonomies ({', '.join(map(repr, names))}): sources "
                        "read separately derive their own classes; give --taxonomy FILE listing them all")
    name = records[0].labels.get("taxonomy") or "classify"
    tax = known_taxonomy(name)
    if tax is None and data_path is not None and (Path(data_path).parent / FILE_NAME).is_file():
        tax = load(Path(data_path).parent / FILE_NAME)
        if tax.name != name:
            raise UserError(f"{Path(data_path).parent / FILE_NAME}: taxonomy {tax.name!r}, but the records name "
                            f"{name!r}")
    if tax is None:
        sets = [tuple(r.labels.get("labels") or ()) for r in records]
        names = sorted({c for s in sets for c in s})
        tax = Taxonomy(name, [TaxonomyClass(n) for n in names], multi_label=any(len(s) != 1 for s in sets))
    return remember(tax)


def prepare_model(model, records, data_path=None):
    """Full models answer through the head. A LoRA model is left to decode freely (its saved adapter folder
    cannot carry the base's config), so that in-training eval measures what the saved adapter will answer."""
    tax = taxonomy_for_records(records, data_path)
    if hasattr(model, "peft_config"):
        return tax
    dv = dict(getattr(model.config, "domainvlm", None) or {})
    dv.update(answer_head=HEAD, taxonomy=tax.name)
    model.config.domainvlm = dv
    return tax


def finish_model_dir(model, folder, records=None) -> None:
    dv = getattr(model.config, "domainvlm", None) or {}
    tax = known_taxonomy(dv.get("taxonomy") or (records[0].labels.get("taxonomy", "") if records else ""))
    if tax is None:
        raise UserError(f"{folder}: no taxonomy {dv.get('taxonomy')!r} known to write beside the model")
    tax.save(folder)


def model_taxonomy(model):
    """The taxonomy of a loaded model: its folder's taxonomy.json, else the one this process knows by the
    name in its config."""
    from ...taxonomy import from_model_dir

    dv = getattr(model.config, "domainvlm", None) or {}
    folder = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    tax = from_model_dir(folder) if folder and Path(folder).is_dir() else None
    tax = tax or known_taxonomy(dv.get("taxonomy", ""))
    if tax is None:
        raise UserError(f"model {folder or '(in memory)'}: answer_head {HEAD!r} needs {FILE_NAME} in the model folder")
    return remember(tax)
