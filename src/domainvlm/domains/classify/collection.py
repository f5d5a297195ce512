"""The classify domain's reader and the taxonomies known in this process (by name), shared by its modules
without going through the package (so no module imports the package that imports it)."""

from __future__ import annotations

from pathlib import Path

TASK = "classify"
HEAD = "classify"
_TAXONOMIES: dict = {}  # taxonomies read in this process, by name (metrics and in-training eval use them)
_DERIVED: dict = {}  # name -> folder of the split folders it was derived from (photos/train, photos/val: merged)


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
    return _merged(derive_taxonomy(items, default_name), near), "derived from the label names"


def _merged(tax, near):
    """A derived taxonomy joined with one of its name derived before in this process (data build --source
    photos/train --source photos/val: val may lack a class, and taxonomy.json must hold them all)."""
    from ...errors import UserError
    from ...taxonomy import Taxonomy, TaxonomyClass

    old = _TAXONOMIES.get(tax.name) if _DERIVED.get(tax.name) == str(near) else None
    _DERIVED[tax.name] = str(near)
    if old is None:
        return tax
    if old.multi_label != tax.multi_label:
        raise UserError(f"taxonomy {tax.name!r}: one source has several labels per image, another one each; "
                        "give --taxonomy FILE (multi_label: true)")
    names = sorted(set(old.names) | set(tax.names))
    return Taxonomy(tax.name, [TaxonomyClass(n) for n in names], multi_label=tax.multi_label)


def model_taxonomy_file(model_dir) -> Path | None:
    """``taxonomy.json`` of a classify model folder (config.json answer_head: classify), else None."""
    from ...models.loader import answer_head_name

    if model_dir is None or answer_head_name(model_dir) != HEAD:
        return None
    folder = Path(model_dir)
    return folder / "taxonomy.json" if (folder / "taxonomy.json").is_file() else None


def read_source(path, taxonomy=None, langs=("en", "zh"), seed: int = 0, explain: bool = True, image_root=None,
                split=None, model_dir=None, **_ignored):
    """Domain hook: a labelled collection -> classify records (of one split when ``split`` is given).
    ``model_dir`` (eval): the model's taxonomy, unless one is given, so answers naming a class of the model
    that the data lacks are wrong answers, not unparsed ones, and a label the model lacks names its row."""
    from ...errors import UserError
    from .instruct import build_records
    from .sources import SPLITS, check_images, check_labels, read_items, split_name, warn_duplicates

    p = Path(path).expanduser().resolve()
    items = read_items(p, image_root)
    from ...models.loader import answer_head_name

    if model_dir is not None and answer_head_name(model_dir) not in (None, HEAD):
        # read for another domain's model (a wafer expert given PNG exports in class folders): a folder name
        # 'Center+Scratch' is that domain's mixture of two classes, not one class that may not hold '+'
        # and 'center' / 'Center' are one of its classes in any spelling (that domain matches them so)
        from ...taxonomy import label_key, split_label

        spelling: dict[str, str] = {}
        for it in items:
            labs = (x for lab in it.labels for x in split_label(lab))
            it.labels = tuple(spelling.setdefault(label_key(x), x) for x in labs)
    own_split = p.is_dir() and p.name.lower() in SPLITS  # photos/train: taxonomy 'photos', as photos/val's
    root = p.parent if own_split else p if p.is_dir() else p.parent
    taxonomy = taxonomy or model_taxonomy_file(model_dir)
    tax, tax_source = resolve_taxonomy(taxonomy, items, root.name if p.is_dir() else p.stem, root)
    split = split_name(split)  # --split valid finds a val/ folder and the other way round
    if split and not any(it.split == split for it in items):
        present = sorted({str(it.split) for it in items})
        raise UserError(f"{p}: no images in split {split!r} (present: {', '.join(present)})")
    # only the asked split's labels and images are checked (eval --split val: a train/ class the model lacks,
    # or a broken train image, is no error); records are built for all, so ids and questions stay the same
    label_sets = check_labels(items, tax, tax_source, split)
    check_images([it for it in items if not split or it.split == split])
    warn_duplicates(items)
    remember(tax)
    recs = build_records(items, label_sets, tax, langs, seed, explain, source=str(p))
    return [r for r in recs if r.meta.get("split") == split] if split else recs
