"""Dataclass configs loaded from YAML with ``key=value`` CLI overrides (dotted keys reach nested configs)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

from .errors import UserError
from .io import read_text


class _DuplicateKey(Exception):
    def __init__(self, key, line: int):
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a mapping naming one key twice (plain YAML keeps the last one, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for k, _ in node.value:
            key = self.construct_object(k, deep=True)
            try:
                if key in seen:
                    raise _DuplicateKey(key, k.start_mark.line + 1)
                seen.add(key)
            except TypeError:  # an unhashable key: yaml's own error follows
                pass
        return super().construct_mapping(node, deep)


def _coerce(value, typ, key: str):
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        members = [a for a in args if a is not type(None)]
        lists = [a for a in members if typing.get_origin(a) is list]
        if lists and isinstance(value, str) and value.lstrip().startswith("["):
            value = _coerce(value, lists[0], key)  # `str | list[str]` on the CLI: report_to=[a,b] is the list
        # a YAML list meets the list member (report_to: [tensorboard]), anything else the first one
        typ = lists[0] if lists and isinstance(value, list) else members[0]
        origin, args = typing.get_origin(typ), typing.get_args(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise UserError(f"config: field '{key}' must be a mapping")
        return from_dict(typ, value, prefix=key + ".")
    if isinstance(value, str) and typ is not str:
        try:  # CLI strings: '3' -> 3, 'true' -> True, '[a,b]' -> list
            value = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise UserError(f"config: field '{key}': cannot read {value!r} ({str(e).splitlines()[0]})") from None
    try:
        if typ is bool and not isinstance(value, bool):
            raise ValueError
        if typ in (int, float, str) and not isinstance(value, typ):
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            value = typ(value)
        if origin is list and not isinstance(value, list):
            value = [value]
    except (TypeError, ValueError):
        raise UserError(f"config: field '{key}' expects {getattr(typ, '__name__', typ)}, got {value!r}") from None
    return value


def _over(default: dict, given: dict) -> dict:
    """``given`` laid over ``default``, nested mappings key by key."""
    out = dict(default)
    for k, v in given.items():
        out[k] = _over(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(cls, d: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise UserError(f"config: unknown field(s) {', '.join(prefix + u for u in sorted(unknown))}")
    d = dict(d)
    for k, v in d.items():
        # a partial nested mapping (`compact.layers=2`) changes the field's own default (a recipe's model),
        # not a fresh instance of the nested class with that class's defaults
        f = fields[k]
        if isinstance(v, dict) and f.default_factory is not dataclasses.MISSING:
            base = f.default_factory()
            if dataclasses.is_dataclass(base):
                d[k] = _over(dataclasses.asdict(base), v)
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in d.items()})


def load_config(cls, path: str | Path | None = None, overrides: list[str] | None = None):
    """YAML file (optional) + 'a.b=value' overrides -> dataclass instance, with field-named errors."""
    data: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise UserError(f"{p}: config file not found")
        try:
            data = yaml.load(read_text(p), Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from None
        except _DuplicateKey as e:
            raise UserError(f"{p}:{e.line}: key {e.key!r} is given twice") from None
        if not isinstance(data, dict):
            raise UserError(f"{p}: top level must be a mapping")
    for ov in overrides or []:
        if "=" not in ov:
            raise UserError(f"override {ov!r}: expected key=value")
        key, val = ov.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {ov!r}: '{'.'.join(parts[:i + 1])}' is not a mapping")
        node[parts[-1]] = val
    return from_dict(cls, data)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def field_docs(cls) -> dict[str, str]:
    """One-line descriptions of a dataclass's fields, read from the comments in its source: the comment after
    a field (continued on comment-only lines whose text is indented past the '#'), else the comment block just
    above it (which then describes every following field without its own comment, up to a blank line)."""
    import inspect
    import io
    import tokenize

    src = inspect.getsource(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            body = tok.string[1:]
            comments[tok.start[0] - 1] = (len(body) - len(body.lstrip()) > 4, body.strip())
    docs, group, last = {}, [], None
    for i, line in enumerate(src.splitlines()):
        code = line.split("#", 1)[0].strip() if i in comments else line.strip()
        name = code.split(":", 1)[0].strip() if ":" in code else None
        if name in names:
            own = comments.get(i, (False, ""))[1]
            docs[name] = own or " ".join(group)
            last = name if own else None
            group = [] if own else group
        elif not code and i in comments:
            cont, text = comments[i]
            if cont and last is not None:
                docs[last] += " " + text
            else:
                group, last = group + [text], None
        elif not code:
            group, last = [], None
    return docs


def config_help(cls, title: str = "config fields") -> str:
    """Every field (nested ones dotted) with its default and description, for a command's --help."""
    rows = []

    def walk(c, prefix, defaults):
        docs = field_docs(c)
        for f in dataclasses.fields(c):
            default = getattr(defaults, f.name)  # from a default instance: nested factories included
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.", default)
                continue
            shown = (default or "''") if isinstance(default, str) else repr(default)
            rows.append((f"{prefix}{f.name}={shown}", docs.get(f.name, "")))

    walk(cls, "", cls())
    width = min(max(len(k) for k, _ in rows), 38) + 2
    lines = [f"{title} (YAML keys, or key=value overrides; shown with their defaults):"]
    lines += [f"  {k:<{width}}{d}" if len(k) < width else f"  {k}\n  {'':<{width}}{d}" for k, d in rows]
    return "\n".join(lines)
