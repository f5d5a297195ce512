"""Pictures for an export to LLaMA-Factory / LLaVA: those tools open image files with PIL, nothing else.

A record may point at an item this package draws (a wafer map in an npz or a fab map file, ``FILE#K``) or at a
DICOM file; an export that kept such references gave JSON whose images no trainer can open. Each is drawn once
as a PNG in ``<out stem>_images/`` beside the export (as ``load_image`` draws it for our own models), and the
exported rows point there. Plain image files are kept as they are.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .images import PIL_SUFFIXES, load_image, split_ref


def needs_drawing(ref: str, base_dir) -> bool:
    path, index = split_ref(ref, base_dir)
    return bool(index) or path.suffix.lower() not in PIL_SUFFIXES


def draw_for_export(records, out: str | Path, base_dir, progress: bool = True) -> tuple[int, Path | None]:
    """Draw every reference of ``records`` that needs it and point the records at the PNGs: (count, folder)."""
    todo = sorted({x for r in records for x in r.images if needs_drawing(x, base_dir)})
    if not todo:
        return 0, None
    out = Path(out)
    folder = out.with_name(out.stem + "_images")
    folder.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    drawn = {}
    for ref in tqdm(todo, desc="draw images", unit="img", disable=not progress or None):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(ref).name)[-60:]
        name = f"{stem}-{hashlib.sha1(ref.encode()).hexdigest()[:10]}.png"  # FILE#3 and FILE#4 apart
        tmp = folder / f".{name}.tmp"
        load_image(ref, base_dir).save(tmp, format="PNG")
        os.replace(tmp, folder / name)  # a stopped export leaves no half-written picture
        drawn[ref] = str((folder / name).resolve())
    for r in records:
        r.images = [drawn.get(x, x) for x in r.images]
    return len(todo), folder
