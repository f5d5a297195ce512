"""Labelled image collections in: an ImageFolder, or a CSV / JSONL list of ``image,labels[,split]``
(label_list.py reads those).

ImageFolder: ``root/<label>/**/*.png|jpg|...`` (data/images.IMAGE_SUFFIXES, DICOM too) or
``root/<split>/<label>/...`` (split folders named train/val/valid/validation/test/dev, read as train/val/test).
Every image is opened once here, so an unreadable file is reported before anything is written. Every problem is
one line naming the file, row or field.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from ...data.images import IMAGE_SUFFIXES, JUNK_FOLDERS
from ...errors import UserError
from ...taxonomy import Taxonomy, TaxonomyClass, reserved_char
from .items import SPLITS, Item, split_name
from .label_list import read_csv, read_jsonl


def _skipped(folder: str) -> bool:
    """Hidden folders and those that zip tools and NASes add (a macOS zip unpacked elsewhere has __MACOSX/)."""
    return folder.startswith(".") or folder in JUNK_FOLDERS


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def _images_in(folder: Path) -> list[Path]:
    """Images anywhere under a class folder (class/sub/x.jpg is the class's, as torchvision's ImageFolder
    reads it: they were silently left out). Hidden folders are skipped; linked folders are followed once."""
    out, seen = [], set()
    for d, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(x for x in dirs if not _skipped(x))
        for f in files:
            q = Path(d) / f
            if q.is_symlink() and not q.exists() and q.suffix.lower() in IMAGE_SUFFIXES:  # it would be left out
                raise UserError(f"{q}: broken link (its target {os.readlink(q)} does not exist)")
            if _is_image(q):
                out.append(q)
    return sorted(out)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _skipped(p.name))


_PHYSIONET_GROUP = re.compile(r"p\d\d")  # MIMIC-CXR's files/p10 ... files/p19


def is_image_folder(path: Path) -> bool:
    """A folder whose sub-folders (or split sub-folders' sub-folders) hold image files."""
    if not path.is_dir() or any(path.glob("*.xml")):  # a folder of report XMLs (+ images/) is X-ray data
        return False
    subs = _subdirs(path)
    if any(s.name == "files" and any(_PHYSIONET_GROUP.fullmatch(c.name) for c in _subdirs(s)) for s in subs) \
            or (subs and all(_PHYSIONET_GROUP.fullmatch(s.name) for s in subs)) \
            or (_PHYSIONET_GROUP.fullmatch(path.name) and path.parent.name == "files"):
        return False  # a MIMIC-CXR tree (files/pXX/pNNNNNNNN/sNNNNNNNN/*.jpg), its files/ or a files/pXX: X-ray data
    if all(s.name.lower() in SPLITS for s in subs):
        subs = [c for s in subs for c in _subdirs(s)]
    # at least two label folders: one folder of images (e.g. images/) is no classification data
    return len(subs) >= 2 and any(_images_in(s) for s in subs[:64])


def read_image_folder(root: Path) -> list[Item]:
    subs = _subdirs(root)
    if not subs:
        raise UserError(f"{root}: no class folders (expected root/<label>/*.png or root/<split>/<label>/)")
    split_layout = all(s.name.lower() in SPLITS for s in subs)
    named = [s.name for s in subs if s.name.lower() in SPLITS]
    if named and not split_layout:  # else train/ would be one class holding every image under it
        other = next(s.name for s in subs if s.name.lower() not in SPLITS)
        raise UserError(f"{root}: split folders ({', '.join(named)}) beside class folder {other!r}: put every "
                        "class folder under a split folder, or use no split folders")
    for s in [root, *subs] if split_layout else [root]:
        loose = next((f for f in sorted(s.iterdir()) if _is_image(f)), None)
        if loose is not None:  # they would be left out unseen
            where = f"split folder {s.name}/" if s is not root else "the top folder beside the class folders"
            raise UserError(f"{loose}: image directly in {where}; put it in a class folder")
    # --source photos/train --source photos/val: the folder's own name is its split (both were all.jsonl)
    own = root.name if root.name.lower() in SPLITS and not split_layout else None
    groups = [(s.name, c) for s in subs for c in _subdirs(s)] if split_layout else [(own, s) for s in subs]
    items = []
    for split, folder in groups:
        files = _images_in(folder)
        if not files:
            raise UserError(f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        label = unicodedata.normalize("NFC", folder.name).strip()  # macOS writes 'ä' decomposed (NFD)
        items += [Item(str(f.resolve()), (label,), split_name(split), str(folder)) for f in files]
    return items


def read_items(path: Path, image_root=None) -> list[Item]:
    if path.is_dir():
        items = read_image_folder(path)
    elif path.suffix.lower() == ".csv":
        items = read_csv(path, image_root)
    else:
        items = read_jsonl(path, image_root)
    _no_repeats(items)
    blank = next((it for it in items if it.split is None), None)
    if blank is not None and any(it.split for it in items):  # it would go to all.jsonl, in no train or val
        raise UserError(f"{blank.where}: field 'split': empty while other rows name a split")
    return items


def _no_repeats(items: list[Item]) -> None:
    """An image listed twice (two rows, or a link to it in another class folder) would be trained on with
    one label and scored with another, or land in train and val alike: one line naming both places."""
    first: dict[str, Item] = {}
    for it in items:
        a = first.setdefault(it.image, it)
        if a is not it:
            raise UserError(f"{it.image}: listed twice ({a.where} and {it.where}); list each image once")


def check_images(items: list[Item]) -> None:
    """Open (and decode) every image once, as training will (load_image: DICOM too): a missing or unreadable
    file is one line naming it and its row."""
    from ...data.images import load_image

    for it in items:
        p = Path(it.image)
        at = "" if Path(it.where).is_dir() else f"{it.where}: "  # a folder item: the path says it
        if not p.is_file():
            raise UserError(f"{at}{p}: image not found")
        try:
            load_image(str(p))
        except UserError as e:
            raise UserError(f"{at}{e}") from None


def warn_duplicates(items: list[Item]) -> None:
    """Byte-identical files under different names (a photo copied into train/ and val/, or into two class
    folders): said once on stderr, not refused, as data build says of a reference in two split files."""
    import hashlib
    import sys

    first: dict[str, Item] = {}
    leak, relabel = [], []
    for it in items:
        try:
            digest = hashlib.sha1(Path(it.image).read_bytes()).hexdigest()
        except OSError:  # an image of a split not asked for (not checked): nothing to compare
            continue
        a = first.setdefault(digest, it)
        if a is not it:
            (leak if a.split != it.split else relabel if a.labels != it.labels else []).append((a, it))
    if leak:
        a, b = leak[0]
        print(f"domainvlm: warning: {len(leak):,} image(s) are byte-identical copies of an image in another split "
              f"(e.g. {b.image} ({b.split}) = {a.image} ({a.split})): evaluation would see images trained on",
              file=sys.stderr)
    if relabel:
        a, b = relabel[0]
        print(f"domainvlm: warning: {len(relabel):,} image(s) are byte-identical copies with other labels (e.g. "
              f"{b.image} ({'; '.join(b.labels)}) = {a.image} ({'; '.join(a.labels)}))", file=sys.stderr)


def derive_taxonomy(items: list[Item], name: str) -> Taxonomy:
    """Classes = the label names in the data (sorted), multi-label when any item has several or none."""
    bad = next((it for it in items for lab in it.labels if reserved_char(lab)), None)
    if bad is not None:  # else 'taxonomy: classes[0]: ...', naming no file (an unclosed quote, 'a+b')
        lab = next(lab for lab in bad.labels if reserved_char(lab))
        raise UserError(f"{bad.where}: field 'labels': {lab[:60]!r} may not contain {reserved_char(lab)!r} "
                        "(several labels: separate them with ';'; check for an unclosed quote)")
    names = sorted({lab for it in items for lab in it.labels})
    if not names:
        raise UserError(f"{name}: no labels in the data")
    seen: dict[str, str] = {}
    for n in names:  # train/Crazing and val/crazing would be two classes, each in one split only
        other = seen.setdefault(n.casefold(), n)
        if other != n:
            where = [next(it.where for it in items if lab in it.labels) for lab in (other, n)]
            raise UserError(f"labels {other!r} ({where[0]}) and {n!r} ({where[1]}) differ only in case: "
                            "use one spelling, or declare a taxonomy (--taxonomy)")
    multi = any(len(it.labels) != 1 for it in items)
    return Taxonomy(name, [TaxonomyClass(n) for n in names], multi_label=multi)


def check_labels(items: list[Item], tax: Taxonomy, tax_source: str, split: str | None = None) -> list[tuple]:
    """Each item's labels in taxonomy order; a label the taxonomy lacks names the row (or folder). With
    ``split``, items of other splits are not checked (their records are dropped): () where they fail."""
    out = []
    for it in items:
        try:
            labs = tax.canonical([tax.resolve(lab) or lab for lab in it.labels])  # 'Rolled in scale' too
        except ValueError as e:
            if split and it.split != split:
                labs = ()
            else:
                raise UserError(f"{it.where}: field 'labels': {e} in taxonomy {tax_source}") from None
        if not labs and not (tax.multi_label and tax.none_label) and not (split and it.split != split):
            raise UserError(f"{it.where}: field 'labels': empty (taxonomy {tax_source} has no none_label)")
        out.append(labs)
    return out
