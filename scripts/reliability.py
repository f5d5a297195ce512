"""Bad-input reliability check: a generated corpus of broken images, data files, paths and requests through
ask, predict, eval, data build/validate/export and both HTTP routes (a real server on loopback).

Prints one table: inputs tried, tracebacks, 5xx, wrong exits / statuses, partial files. A row passes when its
exit code (or HTTP status) is the expected one, nothing raised past the CLI, the server logged no traceback,
and no half-written output (or temp file) was left behind. Run with scripts/reliability.sh.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from domainvlm.cli import main
from reliability_common import Tally, rss_mb, server
from domainvlm.domains.wafer.render import render_map

Q = "What defect pattern does this wafer map show?"


def bomb_png(w: int, h: int) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    co, row = zlib.compressobj(9), b"\0" * (1 + (w + 7) // 8)
    idat = b"".join(co.compress(row) for _ in range(h)) + co.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def png_bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def images(d: Path) -> dict[str, tuple[Path, int]]:
    """name -> (file, expected exit of `ask`): 0 readable, 2 a user error."""
    d.mkdir()
    good = render_map(np.ones((26, 26), np.uint8))
    ok = png_bytes(good)
    files = {
        "corrupt.png": (ok[:16] + os.urandom(300), 2), "truncated.png": (ok[: len(ok) // 2], 2),
        "empty.png": (b"", 2), "text.png": (b"this is not an image\n", 2),
        "bomb9000.png": (bomb_png(9000, 9000), 2), "bomb20000.png": (bomb_png(20000, 20000), 2),
        "deep16.png": (png_bytes(Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))), 0),
        "cmyk.jpg": (png_bytes(good.convert("CMYK"), "JPEG"), 0),
        "palette.png": (png_bytes(good.convert("P"), transparency=0), 0), "one_pixel.png": (png_bytes(Image.new("RGB", (1, 1))), 0),
        "anim.gif": (png_bytes(good, "GIF", save_all=True, append_images=[good.rotate(90)]), 0),
        "garbage.dcm": (b"\0" * 128 + b"DICM" + os.urandom(200), 2), "good.png": (ok, 0),
    }
    out = {}
    for name, (data, rc) in files.items():
        (d / name).write_bytes(data)
        out[name] = (d / name, rc)
    (d / "dir.png").mkdir()
    (d / "loop_a.png").symlink_to(d / "loop_b.png")
    (d / "loop_b.png").symlink_to(d / "loop_a.png")
    np.savez(d / "maps.npz", arr_0=np.ones((2, 26, 26), np.uint8), arr_1=np.zeros((2, 8), np.uint8))
    out.update({"dir.png": (d / "dir.png", 2), "loop.png": (d / "loop_a.png", 2), "missing.png": (d / "nope.png", 2),
                "npz_index_out_of_range": (Path(f"{d / 'maps.npz'}#7"), 2)})
    return out


def record(image: str, i: int = 0) -> dict:
    return {"id": f"r{i}", "images": [image], "labels": {"task": "wafer", "defects": ["Center"]},
            "messages": [{"role": "user", "content": f"<image>\n{Q}"}, {"role": "assistant", "content": "Diagnosis: Center"}]}


def data_files(d: Path, good: Path, bad: Path) -> dict[str, tuple[Path, int]]:
    """name -> (data file, expected exit of `data validate`)."""
    d.mkdir()
    line = json.dumps(record(str(good))).encode()
    files = {
        "latin1.jsonl": (line + b"\n" + line.replace(b"Center", b"Centr\xe9") + b"\n", 2),
        "malformed.jsonl": (line + b"\n{\"id\": 2, \"images\": [\n", 2), "list_line.jsonl": (line + b"\n[1, 2]\n", 2),
        "bom.jsonl": (b"\xef\xbb\xbf" + line + b"\n", 0), "empty.jsonl": (b"", 2),
        "wrong_schema.json": (b'[{"hello": "world"}]', 2), "corrupt.npz": (b"PK\x03\x04" + os.urandom(100), 2),
        "control_char.jsonl": (line.replace(b"Center", b"Cen\tter") + b"\n", 2),
        "bad_image_among_good.jsonl": (b"".join(json.dumps(record(str(p), i)).encode() + b"\n"
                                                for i, p in enumerate([good, bad, good])), 2),
    }
    out = {}
    for name, (data, rc) in files.items():
        (d / name).write_bytes(data)
        out[name] = (d / name, rc)
    (d / "loop_a.jsonl").symlink_to(d / "loop_b.jsonl")
    (d / "loop_b.jsonl").symlink_to(d / "loop_a.jsonl")
    out["loop.jsonl"] = (d / "loop_a.jsonl", 2)
    (d / "latin1.csv").write_bytes(b"image,question\n" + str(good).encode() + b",q\n\xe9.png,q\n")
    (d / "no_image_col.csv").write_bytes(b"picture,question\nx.png,q\n")
    out.update({"latin1.csv": (d / "latin1.csv", 2), "no_image_col.csv": (d / "no_image_col.csv", 2)})
    return out


def _files(d: Path | None) -> set[Path]:
    return set(d.rglob("*")) if d is not None and d.exists() else set()


def cli(t: Tally, entry: str, what: str, argv: list[str], expect: set[int], out: Path | None = None):
    """Run one command in-process; ``out``: its output folder, checked for leftovers."""
    err, rc, tb, before, t0 = io.StringIO(), None, False, _files(out), time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except BaseException as e:  # noqa: BLE001 - anything escaping main() is a traceback for the user
            tb, rc = True, f"{e.__class__.__name__}: {e}"
    new = [p for p in _files(out) - before if p.is_file()]
    # a temp file left behind, or anything written by a run that failed as a whole
    partial = any(p.name.startswith(".") and ".tmp" in p.name for p in new) or (rc == 2 and bool(new))
    lines = [ln for ln in err.getvalue().splitlines() if "domainvlm: error" in ln]
    wrong = rc not in expect or (rc == 2 and len(lines) != 1)
    t.add(entry, what, tb, False, wrong, partial, f"rc={rc} expected {sorted(expect)}; {err.getvalue()[-200:]!r}",
          time.perf_counter() - t0)


def run_cli(t: Tally, root: Path, imgs, datas):
    for name, (p, rc) in imgs.items():
        cli(t, "ask", name, ["ask", "--image", str(p), Q, "--max-new-tokens", "16"], {rc})
        d = root / "runs" / f"img_{name}"
        d.mkdir(parents=True)
        (d / "in.jsonl").write_text(json.dumps(record(str(p))) + "\n")
        cli(t, "data validate", name, ["data", "validate", str(d / "in.jsonl")], {rc})
        # predict and eval of one unreadable image: the row is an error (exit 1, named); all unreadable: eval 2
        cli(t, "predict", name, ["predict", str(d / "in.jsonl"), "-o", str(d / "o" / "p.jsonl"), "--no-progress"],
            {0} if rc == 0 else {1}, d / "o")
        cli(t, "eval", name, ["eval", "--data", str(d / "in.jsonl"), "--out", str(d / "e" / "m.json"), "--quiet",
                              "--max-new-tokens", "16"], {rc}, d / "e")
    for name, (p, rc) in datas.items():
        d = root / "runs" / f"data_{name}"
        d.mkdir(parents=True)
        if p.suffix == ".csv":
            cli(t, "predict", name, ["predict", str(p), "-o", str(d / "o" / "p.csv"), "--no-progress"], {2}, d / "o")
            continue
        readable = name in ("bom.jsonl", "bad_image_among_good.jsonl")  # well-formed files
        cli(t, "data validate", name, ["data", "validate", str(p)], {rc})  # validate opens every image too
        cli(t, "data build", name, ["data", "build", "--source", str(p), "--out", str(d / "b")],
            {0} if readable else {2}, d / "b")
        cli(t, "data export", name, ["data", "export", str(p), "--format", "sharegpt", "--out",
                                     str(d / "x" / "e.json")], {0} if readable else {2}, d / "x")
        e_rc = {1} if name == "bad_image_among_good.jsonl" else {0} if readable else {2}
        cli(t, "eval", name, ["eval", "--data", str(p), "--out", str(d / "e" / "m.json"), "--quiet",
                              "--max-new-tokens", "16"], e_rc, d / "e")
        if not readable:  # (training on the good files is a job of its own, not a bad-input check)
            cli(t, "train", name, ["train", f"data={p}", f"output_dir={d / 'run'}", "max_steps=1", "--no-progress"],
                {2}, d / "run")


def http_cases(imgs, files_dir: Path) -> list[tuple[str, str, str, object, set[int]]]:
    """(what, method, path, json body | raw bytes, expected statuses)."""
    def url_msg(url):
        return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                          {"type": "text", "text": Q}]}], "max_tokens": 16}
    b64 = {n: base64.b64encode(p.read_bytes()).decode() for n, (p, _) in imgs.items() if p.is_file()}
    cases = []
    for n, s in b64.items():
        want = {200} if imgs[n][1] == 0 else {400, 413}
        cases.append((f"image {n}", "POST", "/v1/chat/completions", url_msg(f"data:image/png;base64,{s}"), want))
        cases.append((f"legacy image {n}", "POST", "/", {"text": Q, "image": s, "max_new_tokens": 16}, want))
    user = lambda text, **kw: {"messages": [{"role": "user", "content": text}], "max_tokens": 16, **kw}  # noqa: E731
    cases += [
        ("1.4 MB prompt", "POST", "/v1/chat/completions", user("defect " * 200000), {400}),
        ("1000 messages", "POST", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "what defect is on this wafer map"}] * 1000}, {400}),
        ("legacy empty image", "POST", "/", {"text": Q, "image": ""}, {400}),
        ("file url NUL", "POST", "/v1/chat/completions", url_msg(f"file://{files_dir}/x%00.png"), {400}),
        ("file url outside", "POST", "/v1/chat/completions", url_msg("file:///etc/passwd"), {400}),
        ("file url ../", "POST", "/v1/chat/completions", url_msg(f"file://{files_dir}/../../etc/passwd"), {400}),
        ("file url bad", "POST", "/v1/chat/completions", url_msg("file://[/x"), {400}),
        ("invalid base64", "POST", "/v1/chat/completions", url_msg("data:image/png;base64,@@@"), {400}),
        ("rep penalty 5e-324", "POST", "/v1/chat/completions", user("hi", temperature=1, repetition_penalty=5e-324),
         {200}),
        ("temperature 1e-300", "POST", "/v1/chat/completions", user("hi", temperature=1e-300), {200}),
        ("malformed JSON", "POST", "/v1/chat/completions", b"{not json", {400}),
        ("JSON array body", "POST", "/v1/chat/completions", b"[1]", {400}),
        ("reserved token", "POST", "/v1/chat/completions", user("a <image> b"), {400}),
        ("GET on POST route", "GET", "/v1/chat/completions", None, {405}),
        ("unknown route", "GET", "/nope", None, {404}),
        ("max_tokens over cap", "POST", "/v1/chat/completions", user("hi", max_tokens=10**9), {400}),
    ]
    return cases


def run_http(t: Tally, root: Path, imgs):
    import httpx

    files = root / "served"
    files.mkdir()
    hdr = {"Authorization": "Bearer k"}
    with server(root, "--allow-local-files", str(files)) as (proc, base, log):
        cases = http_cases(imgs, files) + [("wrong key", "POST", "/", {"text": "hi"}, {401})]
        for what, method, path, body, want in cases:
            h = {"Authorization": "Bearer wrong"} if what == "wrong key" else hdr
            kw = {"content": body, "headers": {**h, "content-type": "application/json"}} if isinstance(body, bytes) \
                else {"json": body, "headers": h}
            entry = "HTTP POST /" if path == "/" else "HTTP /v1/chat/completions"
            t0 = time.perf_counter()
            try:
                r = httpx.request(method, base + path, timeout=120, **kw)
                status, ok_json = r.status_code, r.headers.get("content-type", "").startswith("application/json")
            except httpx.HTTPError as e:
                status, ok_json = f"{e.__class__.__name__}", False
            bad = status not in want or not ok_json
            t.add(entry, what, False, isinstance(status, int) and status >= 500, bad, False,
                  f"status {status}, expected {sorted(want)}", time.perf_counter() - t0)
        healthy = httpx.get(base + "/health", timeout=5).status_code == 200
        t.add("HTTP /health", "after the corpus", False, not healthy, not healthy, False, "server unhealthy")
        peak = rss_mb(proc.pid, "VmHWM")
        if peak is not None:
            t.notes.append(f"server peak RSS over the HTTP corpus: {peak / 1024:.2f} GiB")
    tb = log.read_text().count("Traceback")
    t.add("HTTP server log", "tracebacks", tb > 0, False, False, False, f"{tb} tracebacks in {log}")


PARTS = ("cli", "http", "schema", "webui", "resume", "soak")


def main_() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help=f"comma-separated parts to run: {', '.join(PARTS)} (default: all; "
                                               "the soak only when SOAK_S or --soak-s is set)")
    ap.add_argument("--skip", default="", help="comma-separated input names to leave out (e.g. bomb9000.png)")
    ap.add_argument("--soak-s", type=float, default=float(os.environ.get("SOAK_S", 0) or 0),
                    help="seconds of mixed-traffic soak (env SOAK_S; e.g. 1800 for 30 minutes)")
    ap.add_argument("--schema-examples", type=int, default=100, help="schemathesis examples per operation")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(","))) or set(PARTS) - ({"soak"} if not args.soak_s else set())
    if only - set(PARTS):
        ap.error(f"--only: unknown part(s) {', '.join(sorted(only - set(PARTS)))}")
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory(prefix="reliab-") as tmp:
        root = Path(tmp)
        imgs = images(root / "img")
        datas = data_files(root / "data", imgs["good.png"][0], imgs["truncated.png"][0])
        imgs = {k: v for k, v in imgs.items() if k not in skip}
        datas = {k: v for k, v in datas.items() if k not in skip}
        t, t0 = Tally(), time.perf_counter()
        if "cli" in only:
            run_cli(t, root, imgs, datas)
        if "http" in only:
            run_http(t, root, imgs)
        if "schema" in only:
            from reliability_schema import run_schema

            run_schema(t, root, args.schema_examples)
        if "webui" in only:
            from reliability_webui import run_webui

            run_webui(t, root, imgs)
        if "resume" in only:
            from reliability_resume import run_resume

            run_resume(t, root)
            from reliability_predict import run_predict_resume

            run_predict_resume(t, root)
        if "soak" in only:
            from reliability_soak import run_soak

            run_soak(t, root, args.soak_s or 120.0)
        print(f"parts: {', '.join(p for p in PARTS if p in only)}; corpus: {len(imgs)} image kinds, {len(datas)} "
              f"data-file kinds, {len(http_cases(imgs, root))} HTTP cases; {time.perf_counter() - t0:.0f} s")
        tot = t.print()
    return 1 if any(tot[1:]) else 0


if __name__ == "__main__":
    sys.exit(main_())
