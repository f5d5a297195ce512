"""The wafer-map domain (``labels.task == "wafer"``): MixedWM38 / WM-811K readers, the taxonomy (taxonomy.json),
the instruction builder, the constrained diagnosis head, the metrics, the dihedral augmentation, the expert
recipe (``train-expert``) and synthetic maps (``data synth``).

Everything is imported on first use, so finding the domain (cli start-up, registry look-ups) stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from .. import Domain, register

NAME = "wafer"


def _score(records, answers, model_dir=None) -> dict:
    """Answers parsed, and classes counted, in the evaluated model's taxonomy (its folder's taxonomy.json)."""
    from .metrics import score_records

    return score_records(records, answers, model_dir)


def _check_records(records, model_dir=None) -> None:
    from .metrics import check_records

    check_records(records, model_dir)


def _sniff(path) -> bool:
    """npz (a zip archive) or a pickle: the wafer reader decides which, and refuses pickles unless allowed;
    or a fab wafer-map file / a labels CSV of them (mapfiles/)."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as fh:
        head = fh.read(4)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return True
    from .mapfiles.labels import source_kind

    return source_kind(p) is not None


def _read_source(path, split=None, allow_pickle: bool = False, langs=("en", "zh"), seed: int = 0,
                 explain: bool = True, follow_up_frac: float = 0.0, convert_dir=None, taxonomy=None, model_dir=None,
                 val_fraction: float = 0.0, **_) -> list:
    """``taxonomy`` / ``model_dir``: the classes a labels CSV of fab map files (mapfiles/labels.py) or a labelled
    map npz (labelled.py) may name; the MixedWM38 / WM-811K readers know their data set's own classes.
    ``val_fraction`` > 0: a file without a val split gets one from its train maps (val_carve.py), and the records
    point into ``<stem>_converted.npz`` (in ``convert_dir``), which holds that split."""
    from ...errors import UserError
    from .instruct import build_wafer_records
    from .mapfiles.labels import load_source, source_kind
    from .npz_writers import save_mixedwm38_npz, save_wm811k_npz
    from .sources import cached_wafer_set, detect_format, load_wafer_file

    p = Path(path)
    fab = source_kind(p)
    if fab is not None:  # a labels CSV of fab map files (a bare map file carries no labels: says so)
        return load_source(p, fab, split=split, langs=langs, seed=seed, explain=explain,
                           follow_up_frac=follow_up_frac, taxonomy=taxonomy, model_dir=model_dir)
    fmt = detect_format(p)
    pickled = fmt == "wm811k-pickle"
    # an npz is read once per process: eval's records and the maps their references name share one set
    ws = load_wafer_file(p, allow_pickle=allow_pickle) if pickled else cached_wafer_set(p)
    ref_path = p
    if val_fraction > 0 and fmt == "labelled-npz":
        raise UserError(f"{p}: --val-fraction is for MixedWM38 / WM-811K files; a labelled map set names its "
                        "splits by file (synth_fab writes train.npz / val.npz / test.npz)")
    carved = val_fraction > 0 and "val" not in (ws.split or [])
    if carved:  # data build --val-fraction: val carved from train (val_carve.py), written to the converted npz
        from .val_carve import carve_val

        ws = carve_val(ws, val_fraction, seed, str(p))
    if pickled or carved:  # convert once so records never point into a pickle (or at the split before carving)
        ref_path = (Path(convert_dir) if convert_dir else p.parent) / (p.stem + "_converted.npz")
        (save_wm811k_npz if fmt.startswith("wm811k") else save_mixedwm38_npz)(ws, ref_path)
    idx = None
    if split and ws.split is None and fmt == "labelled-npz":  # its split is its file's name (val.npz)
        _check_file_split(p, split)
    elif split:
        if ws.split is None:
            raise UserError(f"{p}: has no split column, cannot select split {split!r}")
        idx = [i for i, s in enumerate(ws.split) if s == split]
        if not idx:
            raise UserError(f"{p}: no maps in split {split!r} (present: {', '.join(sorted(set(ws.split)))})")
    if fmt == "labelled-npz":  # label names as written: checked here against the taxonomy, as a labels CSV's
        from .labelled import build_records

        return build_records(ws, str(p), range(len(ws)) if idx is None else idx, langs, seed, explain,
                             follow_up_frac, taxonomy, model_dir)
    return build_wafer_records(ws, str(ref_path), langs, seed, explain, follow_up_frac, idx)


def _check_file_split(p: Path, split: str) -> None:
    """A labelled map set (synth_fab's train.npz / val.npz / test.npz) holds one split, named by its file: all
    of it for --split of that name (eval / calibrate --data val.npz --data mixedwm38.npz --split val), an error
    for another, a file named like no split says how to take it whole."""
    from ...data.splits import STANDARD, alias
    from ...errors import UserError

    stem = alias(p.stem)
    if stem == alias(split):
        return
    what = f"its split is {stem!r}, by its file name" if stem in STANDARD else "its file name names no split"
    raise UserError(f"{p}: a labelled map set has no split column ({what}); --split {split} selects none of it "
                    f"(leave --split out to use all of it)")


def _augment(record, images, name: str) -> list:
    """``dihedral``: one random rotation/mirror (torch RNG: seeded per DataLoader worker) for all of a record's
    maps; labels are unchanged by it."""
    import torch

    from .canvas import dihedral

    k = int(torch.randint(0, 8, ()))
    return [dihedral(im, k) for im in images]


def _eval_artifacts(metrics: dict, out_path) -> None:
    from ...evaluate.plots import plot_confusion

    png = Path(out_path).with_suffix(".confusion.png")
    title = f"{Path(str(metrics.get('data', ''))).name} {metrics.get('split') or ''} n={metrics['n']}"
    plot_confusion(metrics["confusion"], png, title)
    metrics["confusion_png"] = str(png)


def _load_image(ref: str, base_dir=None, size: int | None = None):
    """``file.npz#N``: map N of a wafer file, or a fab wafer-map file (``FILE`` / ``FILE#K``, mapfiles/),
    rendered with the fixed palette (None for other references), at ``size`` x ``size`` when given (the
    model's canvas), else unpadded."""
    from ...data.images import resolve
    from .mapfiles.hooks import map_image

    from .input_check import mark_map_data

    p, index = resolve(ref, base_dir)
    img = map_image(p, index, size)
    if img is not None or index is None:
        return img if img is None else mark_map_data(img)
    from .render import render_map
    from .sources import get_map

    return mark_map_data(render_map(get_map(str(p), index), size=size))


def _load_batch(refs, size=None) -> list:
    from .batch_load import load_batch

    return load_batch(refs, size)


def _fab(name: str):
    """A fab map-file hook (mapfiles/hooks.py), imported on first use."""
    def call(*args):
        from .mapfiles import hooks

        return getattr(hooks, name)(*args)
    return call


def _lot_report(predictions, out_dir, model_dir=None) -> dict:
    from .lot_report import write_lot_report

    return write_lot_report(predictions, out_dir, model_dir)


def _webui_inputs(gr, image) -> None:
    from .mapfiles.webui import add_map_upload

    add_map_upload(gr, image)


def _head(model, processor, model_dir=None):
    from .head import make_head

    return make_head(model, processor, model_dir)


def _synth(n: int, size: int, seed: int, classes, val_fraction: float, out) -> int:
    """``domainvlm data synth``: a seeded synthetic MixedWM38-layout npz; returns the number of maps."""
    from .npz_writers import save_mixedwm38_npz
    from .synth import synth_set

    ws = synth_set(n, size, seed, classes, {"train": 1 - val_fraction, "val": val_fraction} if val_fraction else None)
    save_mixedwm38_npz(ws, out, with_split=bool(val_fraction))
    return len(ws)


def _eval_facts(engine, records, base_dir=None, limit: int = 200) -> dict:
    from .fact_eval import fact_metrics

    return fact_metrics(engine, records, base_dir, limit)


def _bench_images(n: int, source=None, seed: int = 0):
    from .bench import bench_images

    return bench_images(n, source, seed)


def _write_beside_records(records, out_dir, taxonomy=None) -> None:
    """``data build --taxonomy`` with a fab's own classes: that taxonomy (the 8 known patterns plus its
    classes, as the records were read with) as taxonomy.json beside the records, the file ``train-expert
    taxonomy=`` and ``eval --taxonomy`` take."""
    from .taxonomy import for_source

    if taxonomy is not None and any(r.labels.get("taxonomy") == "custom" for r in records):
        for_source(taxonomy).save(out_dir)


def _example_images(cache=None) -> list[str]:
    from .examples import example_images

    return example_images(cache)


def _adopt(recs, model_dir, langs=("en",), taxonomy=None):
    from .adopt import adopt_records

    return adopt_records(recs, model_dir, langs, taxonomy)


register(Domain(
    name=NAME, score=_score, sniff=_sniff, read_source=_read_source, answer_heads={"wafer-diagnosis": _head},
    augment=_augment, eval_artifacts=_eval_artifacts, load_image=_load_image,
    load_batch=_load_batch,
    extra={"augmentations": ("dihedral",), "synth": _synth, "bench_images": _bench_images,
           "gold_labels": lambda r: tuple(r.labels["defects"]),  # calibration / confidence metrics
           "check_records": _check_records,  # eval: gold classes in the model's taxonomy, before generating
           "write_beside_records": _write_beside_records,  # data build: a fab's own taxonomy.json
           "example_images": _example_images, "eval_facts": _eval_facts,
           "default_question": "What defect pattern does this wafer map show?",  # predict / ask without one
           "adopt_records": _adopt,  # eval / calibrate: class folders or a CSV of PNG renders, as wafer records
           # fab map files (SEMI G85 / E142, STDF, KLARF; mapfiles/): uploads, folders, web UI, lot report
           "decode_upload": _fab("map_upload"), "decode_base64": _fab("map_base64"),
           "decode_upload_at": _fab("map_upload_at"),
           "folder_items": _fab("folder_wafers"), "file_items": _fab("file_wafers"),
           "webui_inputs": _webui_inputs, "lot_report": _lot_report},
))
