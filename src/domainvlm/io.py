"""Atomic file output: write to a temporary sibling, then rename, so a failure leaves nothing half-written
(files: :func:`atomic_path`; folders: :func:`swap_in`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


_UMASK = _umask()  # once, at import: os.umask is process-wide, so not read per call from many threads


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only if the block succeeds."""
    from .errors import UserError

    dest = Path(dest)
    if dest.is_dir():  # os.replace would fail only after the work is done, with a traceback
        raise UserError(f"{dest}: is a folder; give a file name")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=dest.parent)
    except OSError as e:  # a read-only or impossible place: the user's path, so one line, not a traceback
        raise UserError(f"{dest}: cannot write there ({e.strerror or e})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file 0600, and so do writers that replace it by their own temporary file
        # (safetensors 0.8's save_file does): give the result the mode a plain open() would (0644 under umask 022)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(dest: str | os.PathLike, mode: str = "w", **kw):
    with atomic_path(dest) as tmp, open(tmp, mode, **kw) as fh:
        yield fh


def write_json(dest, obj, indent: int = 2) -> None:
    with atomic_open(dest, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=indent)
        fh.write("\n")


def write_jsonl(dest, rows) -> int:
    n = 0
    with atomic_open(dest, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def readable(folder: str | os.PathLike) -> None:
    """Give every file and folder under ``folder`` (itself included) the read (and folder search) bits the umask
    allows: writers that go through a temporary file (safetensors 0.8's save_file, so save_pretrained's
    model.safetensors; tempfile.mkdtemp) leave them 0600 / 0700, unreadable to anyone else."""
    for d, _dirs, files in os.walk(folder):
        for p, bits in [(d, 0o555), *((os.path.join(d, f), 0o444) for f in files)]:
            if os.path.islink(p):
                continue
            mode = os.stat(p).st_mode & 0o7777
            if mode | (bits & ~_UMASK) != mode:
                os.chmod(p, mode | (bits & ~_UMASK))


def swap_in(tmp: str | os.PathLike, dest: str | os.PathLike, keep_as: str | os.PathLike | None = None) -> None:
    """Replace folder ``dest`` by the finished folder ``tmp`` (its sibling): the old one is moved aside first
    and removed last (or kept as ``keep_as``), so ``dest`` is always either the old or the new complete folder;
    a kill between the two renames leaves both beside it (train.checkpoint.recover_checkpoint). What is swapped
    in is made readable as a plain write would leave it (:func:`readable`)."""
    tmp, dest = Path(tmp), Path(dest)
    readable(tmp)
    old = Path(keep_as) if keep_as is not None else dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    if keep_as is None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ text input
def _not_utf8(path, data: bytes, e: UnicodeDecodeError, line: int | None = None) -> str:
    if line is None:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    else:
        col = e.start + 1
    return (f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {col}); "
            "save the file as UTF-8")


def read_text(path: str | os.PathLike, gunzip: bool = False) -> str:
    """The whole file as UTF-8 text (a leading BOM dropped); a bad byte is a UserError naming file:line.
    ``gunzip``: a gzip file (named ``.gz`` or starting with gzip's magic bytes, as PhysioNet's ``.csv.gz``) is
    decompressed first (line numbers are then the text's); an unreadable one is one line naming the file."""
    from .errors import UserError

    data = Path(path).read_bytes()
    if gunzip and (data[:2] == b"\x1f\x8b" or str(path).lower().endswith(".gz")):
        import gzip
        import zlib

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut file: EOFError
            raise UserError(f"{path}: not a readable gzip file ({e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(_not_utf8(path, data, e)) from None


def iter_lines(path: str | os.PathLike):
    """(line number, text) of a UTF-8 file, streamed; a bad byte is a UserError naming file:line."""
    from .errors import UserError

    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise UserError(_not_utf8(path, raw, e, n)) from None


def resolve_path(path: str | os.PathLike) -> Path:
    """``Path.resolve`` with a symlink loop as a UserError naming the path (Python raises RuntimeError)."""
    from .errors import UserError

    p = Path(path).expanduser()
    try:
        return p.resolve()
    except (RuntimeError, OSError):
        raise UserError(f"{p}: cannot be resolved (a symlink loop, or too many levels of symlinks)") from None
