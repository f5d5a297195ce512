"""`domainvlm` command line. Each sub-command lives in ``domainvlm/commands/<name>.py`` and exposes

    NAME = "eval"                # sub-command name (defaults to the module name)
    HELP = "one-line help"
    def add_arguments(parser): ...
    def run(args) -> int | None: ...

so commands are added without touching this file. A domain's own commands live in
``domainvlm/domains/<domain>/commands/<name>.py`` with the same contract and are listed with the rest. User mistakes raise :class:`UserError`, which is printed
as one line (``domainvlm: error: ...``) with exit code 2; tracebacks are kept for real bugs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from . import __version__, commands
from .errors import UserError


def _command_modules():
    from . import domains

    found = [(i.name, f"{commands.__name__}.{i.name}") for i in pkgutil.iter_modules(commands.__path__)]
    for pkg in domains.command_packages():
        found += [(i.name, f"{pkg.__name__}.{i.name}") for i in pkgutil.iter_modules(pkg.__path__)]
    for name, module in sorted(found):
        if not name.startswith("_"):
            yield importlib.import_module(module)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line (like every other user error); the full usage stays behind --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="domainvlm", description="domainvlm: labelled images -> fine-tuned expert "
                                "VLM -> measured evaluation -> chat, HTTP API and web UI.")
    p.add_argument("--version", action="version", version=f"domainvlm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        name = getattr(mod, "NAME", mod.__name__.rsplit(".", 1)[-1].replace("_", "-"))
        sp = sub.add_parser(name, help=getattr(mod, "HELP", None), description=getattr(mod, "HELP", None))
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run, _parser=sp)
    return p


def main(argv: list[str] | None = None) -> int:
    # bitsandbytes' CPU backend warns at import (via peft) about an optional hub kernel we never use offline.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    parser = build_parser()
    try:  # --help, --version and usage errors exit from inside argparse: return their code instead
        args, extra = parser.parse_known_args(argv)
        # key=value overrides may sit anywhere on the line (argparse stops a positional list at the first flag)
        if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = list(args.overrides or []) + extra
        elif extra:  # named by the sub-command's parser, so the hint points at its own --help
            flags = [x for x in extra if x.startswith("-")]  # only those: the key=value ones after them are fine
            bad = flags if hasattr(args, "overrides") and flags else extra
            getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(bad)}")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "_run", None):  # no command: a usage mistake like any other (exit 2)
        parser.print_help(sys.stderr)
        return 2
    try:
        rc = args._run(args)
    except UserError as e:
        print(f"domainvlm: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("domainvlm: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
