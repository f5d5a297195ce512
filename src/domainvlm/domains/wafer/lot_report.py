"""Per-lot summary of a `predict` run over wafer maps: what an engineer pastes into a yield review.

Writes into one folder (each file atomically): ``lot_report.md`` (per lot: wafers per pattern, yield per
wafer), ``lot_summary.json`` (the same numbers), ``wafers.csv`` (one row per wafer) and ``grid_<lot>.png``
(the maps, each captioned with wafer id, yield and diagnosis; a lot id that is no safe file name gets a hash of
it, ``grid_LOT_7-1a2b3c4d.png``, named in the summary's ``grid_png``). Rows whose image is not a wafer map (a fab map
file ``FILE#K`` or an npz ``FILE#N``) are left out and counted. Answers are read back in the taxonomy of the
model that gave them (its folder's taxonomy.json: a fab's own classes are counted like the 8 known ones).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

from .knowledge import parse_diagnosis
from .patterns import NORMAL
from .taxonomy import for_model_dir
from ...data.images import split_ref
from ...errors import UserError
from ...io import atomic_open, atomic_path, write_json

TILE, CAPTION, COLS = 176, 40, 6


def read_predictions(path) -> list[dict]:
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _wafer(ref: str):
    """(grid, wafer id, lot id, format) of a prediction row's image, or None when it is no wafer map."""
    from ...data.images import resolve
    from .mapfiles import get_wafer
    from .mapfiles.hooks import kind

    if not isinstance(ref, str):
        return None
    p, index = resolve(ref)
    if kind(p) is not None:
        w = get_wafer(str(p), index)
        return w.grid, w.wafer_id, w.lot_id or "(no lot id)", w.fmt, bool(w.meta.get("ends_without_mrr"))
    if index is not None and p.suffix.lower() == ".npz" and p.is_file():
        from .sources import get_map

        return get_map(str(p), index), f"{p.stem}#{index}", p.stem, "npz", False
    return None


def _diagnosis(row: dict, tax) -> str:
    if row.get("error"):
        return "(error)"
    d = parse_diagnosis(row.get("answer") or "", tax)
    return "(unparsed)" if d is None else ("+".join(d) or NORMAL)


def summarise(rows: list[dict], tax=None) -> dict:
    """``tax``: the answering model's taxonomy (default: the 8 known patterns)."""
    tax = tax or for_model_dir(None)
    lots: dict[str, dict] = {}
    skipped, unreadable = 0, []
    for r in rows:
        try:
            w = _wafer(r.get("image"))
        except UserError as e:  # a map file that does not read: a wafer missing from its lot, so say so
            unreadable.append({"image": r.get("image"), "error": str(e)})
            continue
        if w is None:
            skipped += 1
            continue
        grid, wid, lot, fmt, cut = w
        n_pass, n_fail = int((grid == 1).sum()), int((grid == 2).sum())
        diag = _diagnosis(r, tax)
        lots.setdefault(lot, {"wafers": []})["wafers"].append({
            "image": r["image"], "wafer_id": wid, "format": fmt, "dies": n_pass + n_fail, "pass": n_pass,
            "fail": n_fail, "yield": round(n_pass / (n_pass + n_fail), 4) if n_pass + n_fail else None,
            "diagnosis": diag, "_grid": grid, "_cut": cut})
    for lot in lots.values():
        ws = lot["wafers"]
        diags = Counter(w["diagnosis"] for w in ws)
        per_pattern = Counter(p for w in ws for p in (w["diagnosis"].split("+") if w["diagnosis"][0] != "(" else []))
        lot["n_wafers"] = len(ws)
        ys = [w["yield"] for w in ws if w["yield"] is not None]  # a map with no dies has no yield (not 0 %)
        lot["mean_yield"] = round(sum(ys) / len(ys), 4) if ys else None
        lot["wafers_without_dies"] = len(ws) - len(ys)
        lot["wafers_per_diagnosis"] = dict(diags.most_common())
        lot["wafers_per_pattern"] = {p: per_pattern[p] for p in (NORMAL, *tax.names) if per_pattern[p]}
        # one wafer id in two files (a retest exported again): counted each time, so the report says so
        files: dict[str, list] = {}
        for w in ws:
            files.setdefault(w["wafer_id"], []).append(split_ref(str(w["image"]))[0].name)
        lot["repeated_wafer_ids"] = {wid: names for wid, names in files.items() if len(names) > 1}
        lot["files_without_end_record"] = sorted({split_ref(str(w["image"]))[0].name for w in ws if w.pop("_cut")})
    return {"lots": lots, "rows_not_wafer_maps": skipped, "unreadable_map_files": unreadable}


def _markdown(summary: dict) -> str:
    out = ["# Lot report", ""]
    for lot, s in sorted(summary["lots"].items()):
        n, empty = s["n_wafers"], s.get("wafers_without_dies", 0)
        mean = "no dies" if s["mean_yield"] is None else f"mean yield {_pct(s['mean_yield'])}"
        out += [f"## Lot {_md(lot)}", "", f"{n} wafer{'s' if n != 1 else ''}, {mean}"
                + (f" ({empty} without dies left out)" if empty and s["mean_yield"] is not None else ""), "",
                "| pattern | wafers |", "|---|---|"]
        out += [f"| {p} | {n} |" for p, n in s["wafers_per_pattern"].items()]
        out += ["", "| wafer | file | yield | pass | fail | diagnosis |", "|---|---|---|---|---|---|"]
        out += [f"| {_md(w['wafer_id'])} | {_md(Path(w['image']).name)} | {_pct(w['yield'])} | {w['pass']} "
                f"| {w['fail']} | {_md(w['diagnosis'])} |" for w in s["wafers"]]
        repeated = s.get("repeated_wafer_ids") or {}
        out += ["", *(f"Wafer {wid} appears {len(names)} times ({', '.join(names)}): a retest exported again? "
                      "Each is counted." for wid, names in repeated.items())] if repeated else []
        cut = s.get("files_without_end_record") or []
        out += ["", f"{', '.join(map(_md, cut))}: no end-of-lot record (STDF MRR), so wafers after the last one "
                    "read may be missing."] if cut else []
        out += ["", f"![maps]({s['grid_png']})", ""]
    bad = summary.get("unreadable_map_files") or []
    if bad:
        out += [f"{len(bad)} map file row(s) could not be read and are not counted:", ""]
        out += [f"- {b['error']}" for b in bad] + [""]
    if summary["rows_not_wafer_maps"]:
        out.append(f"{summary['rows_not_wafer_maps']} row(s) were not wafer maps and are not counted.")
    return "\n".join(out) + "\n"


def _pct(y) -> str:
    return "-" if y is None else f"{100 * y:.1f}%"


def _md(text) -> str:
    """A cell of the pasted report: a '|' in a wafer or lot id would add a column, '<', '*' ... would format."""
    return re.sub(r"([\\|*`<>\[\]])", r"\\\1", str(text))  # "_" stays: intraword, it does not format


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "lot"


def _grid_names(lots) -> dict[str, str]:
    """lot id -> its grid PNG's name, unique: a lot id changed by _safe ('LOT/7', 'LOT_7' -> 'LOT_7') or one that
    differs from another only in case (one file on macOS / Windows) gets a hash of the id, stable across runs."""
    import hashlib

    out, used = {}, set()
    for lot in sorted(lots):
        name = _safe(lot)
        if name != lot or name.casefold() in used:
            name += "-" + hashlib.sha1(lot.encode("utf-8")).hexdigest()[:8]
        used.add(name.casefold())
        out[lot] = f"grid_{name}.png"
    return out


def _grid_png(wafers: list[dict], dest: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    from .render import render_map

    cols = min(COLS, len(wafers))
    rows = -(-len(wafers) // cols)
    sheet = Image.new("RGB", (cols * TILE, rows * (TILE + CAPTION)), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for i, w in enumerate(wafers):
        x, y = (i % cols) * TILE, (i // cols) * (TILE + CAPTION)
        sheet.paste(render_map(w["_grid"], size=TILE - 8), (x + 4, y + 4))
        draw.text((x + 4, y + TILE), f"{w['wafer_id']}  {_pct(w['yield'])}", fill="black", font=font)
        draw.text((x + 4, y + TILE + 16), w["diagnosis"][:34], fill="black", font=font)
    with atomic_path(dest, suffix=".png") as tmp:
        sheet.save(tmp, "PNG")


def write_lot_report(predictions, out_dir, model_dir=None) -> dict:
    """Summarise a predictions file (JSONL or CSV) of the model in ``model_dir`` into ``out_dir``; returns the
    summary."""
    summary = summarise(read_predictions(predictions), for_model_dir(model_dir))
    if not summary["lots"]:
        raise UserError(f"{predictions}: no rows refer to wafer maps, so there is no lot report to write")
    out = Path(out_dir)
    for lot, png in _grid_names(summary["lots"]).items():
        summary["lots"][lot]["grid_png"] = png
        _grid_png(summary["lots"][lot]["wafers"], out / png)
    flat = [{"lot": lot, **{k: v for k, v in w.items() if k != "_grid"}}
            for lot, s in sorted(summary["lots"].items()) for w in s["wafers"]]
    with atomic_open(out / "wafers.csv", "w", encoding="utf-8", newline="") as fh:
        wr = csv.DictWriter(fh, ["lot", "wafer_id", "image", "format", "dies", "pass", "fail", "yield", "diagnosis"])
        wr.writeheader()
        wr.writerows(flat)
    for s in summary["lots"].values():
        for w in s["wafers"]:
            w.pop("_grid")
    write_json(out / "lot_summary.json", summary)
    with atomic_open(out / "lot_report.md", "w", encoding="utf-8") as fh:
        fh.write(_markdown(summary))
    return summary
