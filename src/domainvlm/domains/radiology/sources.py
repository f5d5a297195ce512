"""Chest X-ray report datasets -> :class:`Record` (task "report").

Detected by content: XrayGLM ``{"annotations": [{"image_id", "caption"}]}``; R2Gen ``annotation.json`` for
IU-Xray and MIMIC-CXR (``train``/``val``/``test`` keys, possibly a blank test key plus per-record ``split``);
IU-Xray/OpenI report XML (one file or a folder of them); the shared ``pairs_with_original_reports.jsonl``;
the native MIMIC-CXR / MIMIC-CXR-JPG tree (:mod:`.mimic_cxr`); and, delegated to :mod:`.formats`, sharegpt /
LLaVA JSON. Images are stored as absolute paths (resolved with :func:`~domainvlm.data.formats.resolve_image_ref`);
missing files are reported by ``check_images``, not here (MIMIC-CXR: left out and counted, see its module).

``split``: sources that carry splits (R2Gen, pairs) are filtered to it; sources without (XrayGLM, XML) get it
written into ``meta["split"]``. ``lang``: XrayGLM is auto-detected per caption; for the pairs file ``"zh"``
selects the GPT Chinese caption instead of the original English report; R2Gen/XML are English only.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from ...data.formats import _loc, detect_json_format, load_items, read_llava, read_sharegpt, resolve_image_ref
from ...data.record import IMAGE_TOKEN, Record
from ...errors import UserError
from .mimic_cxr import is_mimic_cxr, load_mimic_cxr
from .prompts import REPORT_PROMPTS
from .report_record import detect_lang, make_report_record

log = logging.getLogger(__name__)


def _default_root(folder: Path, image_root) -> Path:
    if image_root is not None:
        return Path(image_root)
    return folder / "images" if (folder / "images").is_dir() else folder


def _need_str(path, i, item, key):
    v = item.get(key) if isinstance(item, dict) else None
    if not isinstance(v, str):
        raise UserError(f"{_loc(path, i, key)}: {'missing' if v is None else 'must be a string'}")
    if not v.strip():  # a blank report would train an empty answer and be scored as a reference
        raise UserError(f"{_loc(path, i, key)}: empty")
    return v


def load_xrayglm(path: Path, image_root=None, split=None, lang=None) -> list[Record]:
    """XrayGLM: captions keyed by OpenI image id; images are ``<image_root>/<image_id>.png``."""
    data = load_items(path)[0]
    anns = data.get("annotations")
    if not isinstance(anns, list):
        raise UserError(f"{path}: field 'annotations': must be a list")
    root = _default_root(path.resolve().parent, image_root)
    out = []
    for i, a in enumerate(anns):
        iid, cap = _need_str(path, i, a, "image_id"), _need_str(path, i, a, "caption")
        lg = lang or detect_lang(cap)
        img = resolve_image_ref(iid if Path(iid).suffix else f"{iid}.png", root, root)
        out.append(make_report_record(iid, [img], None, None, report=cap, source="xrayglm", split=split, lang=lg))
    return out


def load_r2gen(path: Path, image_root=None, split=None, lang=None) -> list[Record]:
    """R2Gen annotation.json (IU-Xray or MIMIC-CXR). ``report`` is one undivided text (R2Gen keeps the
    findings section), so findings/impression stay None. Multi-view studies become one multi-image record."""
    if lang not in (None, "en"):
        raise UserError(f"{path}: R2Gen annotations are English; lang={lang!r} is not available")
    data = load_items(path)[0]
    root = _default_root(path.resolve().parent, image_root)
    out, moved = [], 0
    for key, rows in data.items():
        if not isinstance(rows, list):
            continue
        key_split = key.strip() or "test"  # some copies name the test split with blanks
        for i, r in enumerate(rows):
            where = f"{key.strip() or repr(key)}[{i}]"
            rid = r.get("id") if isinstance(r, dict) else None
            if rid is None:
                raise UserError(f"{path}: record {where}: field 'id': missing")
            report = _need_str(f"{path}: record {where}", None, r, "report")
            paths = r.get("image_path")
            if isinstance(paths, str):
                paths = [paths]
            if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
                raise UserError(f"{path}: record {where}: field 'image_path': must be a non-empty list of paths")
            # R2Gen reads ann[split]: the list a record sits in is its split; a per-record "split" only
            # names it for lists that are not splits (a stale one must not move a test study into train)
            s = key_split if key_split in ("train", "val", "test") else (r.get("split") or key_split)
            if r.get("split") not in (None, s):
                moved += 1
            if split and s != split:
                continue
            mimic = "study_id" in r or "subject_id" in r
            extra = {k: r[k] for k in ("study_id", "subject_id") if k in r}
            out.append(make_report_record(
                rid, [resolve_image_ref(p, root, root) for p in paths], None, None, report=report,
                source="r2gen-mimic-cxr" if mimic else "r2gen-iu-xray", split=s, lang="en", **extra))
    if moved:
        log.warning("%s: %d record(s) carry a 'split' other than the list they are in; the list decides, as in "
                    "R2Gen", path, moved)
    return out


def load_iu_pairs(path: Path, image_root=None, split=None, lang=None) -> list[Record]:
    """The shared pairs file: one line per image with original findings/impression and GPT captions."""
    base = path.resolve().parent
    out = []
    for i, r in enumerate(load_items(path)):
        img = _need_str(path, i, r, "image")
        s = r.get("r2gen_split") or r.get("split")
        if split and s != split:
            continue
        ref = resolve_image_ref(img, base, image_root)
        extra = {k: r[k] for k in ("iu_report_id", "mesh_major", "indication") if k in r}
        rid = r.get("openi_image_id") or Path(img).stem
        if lang == "zh":
            cap = _need_str(path, i, r, "caption_zh_gpt")
            rec = make_report_record(rid, [ref], None, None, report=cap, source="iu-pairs", split=s, lang="zh",
                                     **extra)
        else:
            fi, im = r.get("findings") or "", r.get("impression") or ""
            if not (fi or im):
                raise UserError(f"{_loc(path, i, 'findings')}: both findings and impression are empty")
            rec = make_report_record(rid, [ref], fi, im, source="iu-pairs", split=s, lang="en", **extra)
        out.append(rec)
    return out


def _xml_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))  # 1.xml, 2.xml, ..., 10.xml
        if not files:
            raise UserError(f"{path}: folder holds no .xml report files")
        return files
    return [path]


def _image_for(root: Path, image_id: str) -> str:
    for ext in (".png", ".jpg", ".jpeg", ".dcm"):
        if (root / (image_id + ext)).exists():
            return str((root / (image_id + ext)).resolve())
    return str((root / (image_id + ".png")).absolute())


def load_openi_xml(path: Path, image_root=None, split=None, lang=None) -> list[Record]:
    """IU-Xray / OpenI ``ecgen-radiology`` XML: ``<AbstractText Label="FINDINGS|IMPRESSION|INDICATION">``,
    ``<parentImage id="CXR1_1_IM-0001-3001">`` (NLMCXR_png names the image ``<id>.png``). Reports without
    images or without findings and impression are skipped (about a tenth of the collection)."""
    if lang not in (None, "en"):
        raise UserError(f"{path}: OpenI reports are English; lang={lang!r} is not available")
    files = _xml_files(path)
    root = _default_root(path if path.is_dir() else path.parent, image_root)  # images/ beside, as documented
    out, skipped = [], 0
    for f in files:
        try:
            tree = ET.parse(f).getroot()
        except ET.ParseError as e:
            raise UserError(f"{f}: malformed XML ({e})") from None
        sec = {}
        for node in tree.iter("AbstractText"):
            sec[(node.get("Label") or "").upper()] = " ".join("".join(node.itertext()).split())
        ids = [p.get("id") for p in tree.iter("parentImage") if p.get("id")]
        if not ids or not (sec.get("FINDINGS") or sec.get("IMPRESSION")):
            skipped += 1
            continue
        uid = tree.find("uId")
        rid = uid.get("id") if uid is not None and uid.get("id") else f"CXR{f.stem}"
        mesh = [" ".join((m.text or "").split()) for m in tree.iter("major") if (m.text or "").strip()]
        extra = {"indication": sec.get("INDICATION"), "comparison": sec.get("COMPARISON"), "mesh_major": mesh}
        out.append(make_report_record(rid, [_image_for(root, i) for i in ids], sec.get("FINDINGS"),
                                      sec.get("IMPRESSION"), source="openi-xml", split=split, lang="en",
                                      **{k: v for k, v in extra.items() if v}))
    if skipped:
        log.warning("%s: skipped %d report(s) without images or without findings/impression", path, skipped)
    if not out:
        raise UserError(f"{path}: no usable report (every XML lacked images or findings/impression)")
    return out


XRAYGLM_PROMPT = "详细描述这张胸部X光片的诊断结果"  # XrayGLM's README (cli_demo.py --prompt_zh)


def _first_user_text(item) -> str | None:
    turns = item.get("conversations", item.get("messages")) if isinstance(item, dict) else None
    for t in turns if isinstance(turns, list) else []:
        if isinstance(t, dict) and t.get("from", t.get("role")) in ("human", "user"):
            text = t.get("value", t.get("content"))
            return " ".join(text.replace(IMAGE_TOKEN, " ").split()) if isinstance(text, str) else None
    return None


def asks_for_report(item) -> bool:
    """A sharegpt/LLaVA record whose first user turn is a chest X-ray report prompt (ours, XrayQwen2VL's,
    XrayGLM's): such files are X-ray report data, though they carry no labels."""
    known = {" ".join(p.split()) for ps in REPORT_PROMPTS.values() for p in ps} | {XRAYGLM_PROMPT}
    return _first_user_text(item) in known


def _as_report(r: Record, fmt: str) -> Record:
    """A sharegpt/LLaVA record without labels -> a report record: the first answer is the reference."""
    if r.labels.get("task") is not None:
        return r
    ref = next(m["content"] for m in r.messages if m["role"] == "assistant").strip()
    lang = detect_lang(ref)
    r.labels = {**r.labels, "task": "report", "report": ref, "lang": lang}
    r.meta = {"source": fmt, "lang": lang, **r.meta}
    return r


def detect_xray_format(path: Path) -> str:
    if is_mimic_cxr(path):
        return "mimic-cxr"
    if path.is_dir() or path.suffix.lower() == ".xml":
        return "openi-xml"
    with open(path, "rb") as fh:
        if fh.read(256).removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace").lstrip().startswith("<"):
            return "openi-xml"
    return detect_json_format(path)


_LOADERS = {"xrayglm": load_xrayglm, "r2gen": load_r2gen, "iu-pairs": load_iu_pairs, "openi-xml": load_openi_xml,
            "mimic-cxr": load_mimic_cxr}


def load_xray(path, image_root=None, split=None, lang=None) -> list[Record]:
    """Load any supported chest X-ray report source as records (format auto-detected)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if lang not in (None, "en", "zh"):
        raise UserError(f"--lang must be 'en' or 'zh', not {lang!r}")
    fmt = detect_xray_format(path)
    if fmt in ("sharegpt", "llava", "records"):
        # domainvlm records are the role/content sharegpt variant plus id/labels/meta (JSON array or JSONL)
        recs = (read_llava if fmt == "llava" else read_sharegpt)(path, image_root)
        recs = [_as_report(r, fmt) for r in recs]
        if split:
            recs = [r for r in recs if r.meta.get("split") == split]
        return recs
    if fmt not in _LOADERS:
        raise UserError(f"{path}: not a recognised X-ray report format (expected XrayGLM, R2Gen annotation, "
                        "OpenI XML, a MIMIC-CXR folder, sharegpt or LLaVA JSON)")
    try:
        return _LOADERS[fmt](path, image_root=image_root, split=split, lang=lang)
    except (AttributeError, TypeError) as e:  # wrong shapes deep inside a recognised file
        raise UserError(f"{path}: malformed {fmt} data ({e})") from None

