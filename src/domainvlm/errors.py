"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class UserError(Exception):
    """A mistake in the user's input (file, record, field, option). Message must name where."""

    exit_code = 2


def where(path, line=None, field=None) -> str:
    """Format a location prefix such as ``data.jsonl:12: field 'messages'``."""
    s = str(path)
    if line is not None:
        s += f":{line}"
    if field is not None:
        s += f": field '{field}'"
    return s


def json_problem(e, line: bool = False) -> str:
    """``JSONDecodeError`` as "<what>, column C" (or "line L column C"); json's "... at" suffix dropped."""
    what = e.msg.removesuffix(" at")
    return f"{what}, line {e.lineno} column {e.colno}" if line else f"{what}, column {e.colno}"
