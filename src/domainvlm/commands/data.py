"""`domainvlm data build|validate|export`: make, check and convert instruction data."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from ..errors import UserError
from ..io import resolve_path
from ._args import key_from_env, nonneg_float, nonneg_int, positive_float, positive_int

NAME = "data"
HELP = "build instruction data from wafer/X-ray sources, validate it, export to sharegpt/LLaVA"


def add_arguments(p):
    sub = p.add_subparsers(dest="data_cmd", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="source files -> record JSONL, one file per split")
    b.add_argument("--source", action="append", required=True, help="npz / LSWMD.pkl / JSON / JSONL / XML; repeatable")
    b.add_argument("--out", required=True, help="output folder (writes <split>.jsonl)")
    b.add_argument("--split", action="append", help="only these splits (default: all present)")
    b.add_argument("--langs", default="en,zh", help="question/answer languages, e.g. en or en,zh; records of a "
                   "fixed language (X-ray reports) outside them are dropped")
    b.add_argument("--allow-pickle", action="store_true",
                   help="allow reading a pickle (WM-811K LSWMD.pkl); pickles can run code: only for trusted files")
    b.add_argument("--image-root", help="folder that image paths in JSON sources are relative to; a MIMIC-CXR "
                   "tree: the folder holding the other half (the reports' or the JPGs' files/)")
    b.add_argument("--no-explain", action="store_true", help="answers give the diagnosis line only")
    b.add_argument("--follow-up-frac", type=float, default=0.0, help="share of records with a second turn")
    b.add_argument("--limit", type=positive_int, help="at most N records per split (for quick experiments)")
    b.add_argument("--qa-per-report", type=positive_int, metavar="N",
                   help="X-ray reports: varied report prompts + N 'is there X?' turns (+ impression question); "
                        "default: keep the source's single report turn")
    b.add_argument("--taxonomy", help="labelled image folders / CSV: taxonomy YAML or JSON (classes, zh names, "
                   "descriptions) or a model folder; default: taxonomy.yaml beside the data, else the label names. "
                   "A labels CSV of wafer-map files or a labelled wafer npz: a fab's own classes, added to the 8 "
                   "known patterns as train-expert taxonomy= adds them (e.g. configs/fab-patterns.yaml), or a model "
                   "folder's")
    b.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                   help="wafer npz / LSWMD.pkl without a val split (LSWMD: Training / Test): move a seeded share F "
                        "of each class's train maps to val, written into <stem>_converted.npz in --out (give "
                        "that file to train-expert / calibrate); default 0: splits as the file has them")
    b.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("validate", help="check a record JSONL (or any source): structure and images")
    v.add_argument("path")
    v.add_argument("--no-images", action="store_true", help="skip opening every image")
    v.add_argument("--allow-pickle", action="store_true")
    s = sub.add_parser("synth", help="write a seeded synthetic wafer-map npz (MixedWM38 layout, with split)")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=positive_int, default=3800)
    s.add_argument("--size", type=int, default=52)
    s.add_argument("--classes", help="comma-separated classes such as Normal,Center,Center+Scratch (default: all 38)")
    s.add_argument("--val-fraction", type=float, default=0.2)
    s.add_argument("--seed", type=int, default=0)
    w = sub.add_parser("rewrite", help="translate / paraphrase / derive Q&A from record text through an "
                                       "OpenAI-compatible LLM endpoint (cached, resumable)")
    w.add_argument("path", help="record JSONL (or any source data build reads)")
    w.add_argument("--out", required=True, help="output record JSONL (+ .cache.jsonl, .errors.jsonl beside it)")
    w.add_argument("--endpoint", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    w.add_argument("--model", required=True, help="model name the endpoint serves")
    w.add_argument("--task", required=True, choices=["translate-zh", "translate-en", "paraphrase", "qa"])
    w.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key (none: no key)")
    w.add_argument("--concurrency", type=positive_int, default=8, help="calls in flight at once")
    w.add_argument("--retries", type=nonneg_int, default=4, help="retries per call on 429/5xx/errors")
    w.add_argument("--backoff", type=nonneg_float, default=1.0, help="first retry wait in s (doubles each time)")
    w.add_argument("--timeout", type=positive_float, default=120.0, help="seconds per call")
    w.add_argument("--temperature", type=nonneg_float, default=0.2)
    w.add_argument("--max-tokens", type=positive_int, default=1024)
    w.add_argument("--limit", type=positive_int, help="first N records only")
    w.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("export", help="record JSONL -> LLaMA-Factory sharegpt or LLaVA json")
    e.add_argument("path")
    e.add_argument("--format", choices=["sharegpt", "llava"], required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--keep-refs", action="store_true", help="keep map references (FILE#K) and DICOM paths as they "
                                                            "are instead of drawing them as PNGs beside --out")


def run(args):
    return {"build": _build, "validate": _validate, "export": _export, "synth": _synth,
            "rewrite": _rewrite}[args.data_cmd](args)


def _rewrite(args):
    from ..data.record import write_records
    from ..data.rewrite import Cache, Client, rewrite
    from ..data.sources import load_any
    from ..io import write_jsonl

    key = key_from_env(args.api_key_env) if args.api_key_env else None
    if not args.endpoint.startswith(("http://", "https://")):
        raise UserError(f"--endpoint: {args.endpoint!r} is not an http(s) URL")
    out = Path(args.out)
    if out.resolve() == Path(args.path).resolve():
        raise UserError("--out: must differ from the input file (the original records are kept)")
    recs = load_any(args.path)[: args.limit] if args.limit else load_any(args.path)
    if not recs:
        raise UserError(f"{args.path}: no records")
    client = Client(args.endpoint, args.model, key, timeout=args.timeout, retries=args.retries,
                    backoff=args.backoff, temperature=args.temperature, max_tokens=args.max_tokens)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache = Cache(out.with_name(out.name + ".cache.jsonl")).load()
    done, errors, stats = rewrite(recs, args.task, client, cache, args.concurrency, not args.no_progress)
    write_records(out, done)
    err_path = out.with_name(out.name + ".errors.jsonl")
    if errors:
        write_jsonl(err_path, errors)
    elif err_path.exists():
        err_path.unlink()  # a clean rerun: no stale error list
    print(json.dumps({"out": str(out), "records": len(recs), "written": len(done), "failed": len(errors),
                      **stats, **({"errors": str(err_path)} if errors else {})}))
    if errors:
        print(f"domainvlm: {len(errors)} record(s) failed (first: {errors[0]['id']}: {errors[0]['error']}); "
              f"rerun the same command to retry only those", file=sys.stderr)
        return 1
    return 0


def _synth(args):
    from .. import domains

    if not 0 <= args.val_fraction < 1:
        raise UserError("--val-fraction: must be in [0, 1)")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    n = domains.get("wafer").extra["synth"](args.n, args.size, args.seed, classes, args.val_fraction, args.out)
    print(f"{args.out}: {n:,} synthetic maps of {args.size}x{args.size}")
    return 0


def _build(args):
    from ..data.record import write_records
    from ..data.sources import load_any
    from ..data.splits import STANDARD, standard_split

    langs = tuple(x.strip() for x in args.langs.split(",") if x.strip())
    bad = [x for x in langs if x not in ("en", "zh")]
    if bad:
        raise UserError(f"--langs: unsupported language(s) {', '.join(bad)} (en, zh)")
    if not 0 <= args.val_fraction < 1:
        raise UserError(f"--val-fraction: must be in [0, 1), got {args.val_fraction}")
    out = Path(args.out)
    by_split: dict[str, list] = {}
    n_read = 0
    for src in args.source:
        recs = load_any(src, allow_pickle=args.allow_pickle, langs=langs, seed=args.seed,
                        explain=not args.no_explain, follow_up_frac=args.follow_up_frac,
                        image_root=args.image_root, convert_dir=out, qa_per_report=args.qa_per_report,
                        taxonomy=args.taxonomy, val_fraction=args.val_fraction)
        n_read += len(recs)
        _warn_missing_images(recs, src)
        recs = _keep_langs(recs, langs, src)
        for r in recs:
            split = standard_split(r.meta.get("split") or "all", src)
            if r.meta.get("split") and split != r.meta["split"]:
                r.meta["split"] = split  # 'validation' rows are val rows, in val.jsonl
            by_split.setdefault(split, []).append(r)
    if n_read and not by_split:  # every record dropped by --langs: no empty output folder
        raise UserError(f"--langs {','.join(langs)}: no record of the sources is in these languages")
    if args.split:
        args.split = [standard_split(s, "--split") for s in args.split]
        missing = [s for s in args.split if s not in by_split]
        if missing:
            raise UserError(f"--split: {', '.join(missing)} not in the sources (present: {', '.join(sorted(by_split))})")
        by_split = {s: by_split[s] for s in args.split}
    stale = sorted(f.name for f in out.glob("*.jsonl") if f.stem in (*STANDARD, "all")
                   and f.stem not in by_split) if out.is_dir() and not args.split else []
    if stale:  # an earlier build's val.jsonl would be read with this build's train.jsonl (other classes, say)
        raise UserError(f"--out {out}: holds {', '.join(stale)} from an earlier build, which this one does not "
                        "write; remove them, choose another --out, or build only some splits with --split")
    _domain_files(by_split, out, args.taxonomy)  # first: a domain refusing the records leaves no record file
    for split, recs in sorted(by_split.items()):
        if args.limit:
            recs = recs[: args.limit]
        n = write_records(out / f"{split}.jsonl", recs)
        langs_n = Counter(r.meta.get("lang") for r in recs)
        print(f"{out / (split + '.jsonl')}: {n:,} records ({', '.join(f'{k}={v}' for k, v in langs_n.items())})")
    _warn_shared_images(by_split)
    return 0


def _warn_shared_images(by_split) -> None:
    """An image in two split files leaks test/val answers into training (e.g. XrayGLM's unsplit captions
    built with R2Gen's splits, or a study listed twice): said, not refused, since all.jsonl may be on purpose."""
    first: dict[str, str] = {}
    shared = []
    for split, recs in sorted(by_split.items()):
        for r in recs:
            for ref in r.images:
                if first.setdefault(ref, split) != split:
                    shared.append((ref, first[ref], split))
    if shared:
        ref, a, b = shared[0]
        print(f"domainvlm: warning: {len(shared):,} image reference(s) are in more than one split file "
              f"(e.g. {ref} in {a} and {b}): evaluation on one would see images trained on", file=sys.stderr)


def _warn_missing_images(recs, src) -> None:
    """Report sources (R2Gen's annotation, XrayGLM's captions) name images that may not be there: said now, not
    when train or eval stops at the first one after loading the model."""
    from ..data.images import split_ref

    seen: dict[str, bool] = {}
    missing = [r for r in recs if not all(seen.setdefault(x, split_ref(x)[0].exists()) for x in r.images)]
    if missing:
        first = next(x for x in missing[0].images if not seen[x])
        print(f"domainvlm: warning: {src}: {len(missing):,} of {len(recs):,} record(s) name an image that does not "
              f"exist (e.g. {first}); train and eval stop at them (--image-root DIR if the images are elsewhere)",
              file=sys.stderr)


def _keep_langs(recs, langs, src) -> list:
    """--langs also filters records whose language the source fixed (X-ray reports without --qa-per-report,
    where nothing else applies it); records of generated questions are drawn from --langs anyway."""
    keep = [r for r in recs if r.meta.get("lang") in (None, *langs)]
    if len(keep) < len(recs):
        print(f"domainvlm: {src}: dropped {len(recs) - len(keep)} of {len(recs)} record(s) not in --langs "
              f"{','.join(langs)}", file=sys.stderr)
    return keep


def _domain_files(by_split, out: Path, taxonomy=None) -> None:
    """Files a domain keeps beside its records (``Domain.extra["write_beside_records"](records, out,
    taxonomy=--taxonomy)``; classify and wafer: taxonomy.json)."""
    from ..domains import all_domains

    recs = [r for rs in by_split.values() for r in rs]
    for d in all_domains():
        write = d.extra.get("write_beside_records")
        if write is not None and any(r.labels.get("task") == d.name for r in recs):
            write([r for r in recs if r.labels.get("task") == d.name], out, taxonomy=taxonomy)


def _validate(args):
    from ..data.images import load_image
    from ..data.sources import load_any

    p = Path(args.path)
    recs = load_any(p, allow_pickle=args.allow_pickle)
    base = resolve_path(p).parent
    if not args.no_images:
        seen = set()
        for r in recs:
            for j, ref in enumerate(r.images):
                if ref in seen:
                    continue
                seen.add(ref)
                try:
                    load_image(ref, base)
                except UserError as e:
                    raise UserError(f"record {r.id!r} field 'images[{j}]': {e}") from None
    tasks = Counter(r.labels.get("task", "?") for r in recs)
    print(json.dumps({"path": str(p), "records": len(recs), "images_checked": not args.no_images,
                      "tasks": dict(tasks)}))
    return 0


def _export(args):
    from ..data.formats import write_llava, write_sharegpt
    from ..data.sources import load_any

    if resolve_path(args.out) == resolve_path(args.path):  # the records (labels, meta) would be lost
        raise UserError(f"--out {args.out}: must differ from the input file")
    recs = load_any(args.path)
    if not args.keep_refs:  # wafer maps (FILE#K) and DICOM: PNGs the trainers can open
        from ..data.export_images import draw_for_export

        n, folder = draw_for_export(recs, args.out, Path(args.path).resolve().parent)
        if n:
            print(f"{folder}: {n:,} images drawn as PNG (map files, npz maps, DICOM)", file=sys.stderr)
    (write_sharegpt if args.format == "sharegpt" else write_llava)(recs, args.out)
    print(f"{args.out}: {len(recs):,} records ({args.format})")
    return 0
