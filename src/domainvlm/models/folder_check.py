"""Why a model folder did not load, as one line naming the folder and the file.

transformers' own errors point at a hub URL, a tokenizer backend class or nothing at all. These checks run
only once a load has failed (the chat template: once the processor is built), so a valid folder laid out in
a way not listed here (a sentencepiece tokenizer, a template kept in tokenizer_config.json) is never refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError

# any one of these makes a tokenizer (fast, sentencepiece, BPE, WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")
IMAGE_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
               "vocab.json", "chat_template.json", *IMAGE_PROCESSOR_FILES)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _broken_json(folder: Path) -> str | None:
    for name in _JSON_FILES:
        p = folder / name
        if not p.is_file():
            continue
        try:
            json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            return f"{p}: malformed JSON ({e.msg}, line {e.lineno}) - the model folder is damaged"
        except (UnicodeDecodeError, OSError) as e:
            return f"{p}: unreadable ({_first_line(e)}) - the model folder is damaged"
    return None


def has_processor(folder: Path) -> bool:
    """Whether ``folder`` holds a processor of its own (tokenizer and image processor files): the trainer saves
    one beside every adapter, a bare peft save has none."""
    folder = Path(folder)
    return (any((folder / f).is_file() for f in TOKENIZER_FILES)
            and any((folder / f).is_file() for f in IMAGE_PROCESSOR_FILES))


def processor_problem(folder: Path, e: BaseException | None = None) -> UserError:
    """The error for a processor (tokenizer + image processor) that could not be built from ``folder``."""
    folder = Path(folder)
    broken = _broken_json(folder)
    if broken:
        return UserError(broken)
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        return UserError(f"{folder}: tokenizer.json missing (the model folder has no tokenizer files)")
    if not any((folder / f).is_file() for f in IMAGE_PROCESSOR_FILES):
        return UserError(f"{folder}: processor_config.json missing (the model folder has no image processor "
                         f"config: processor_config.json or preprocessor_config.json)")
    if e is None or "image processor" in str(e):  # its files are there but hold no usable settings
        present = next(f for f in IMAGE_PROCESSOR_FILES if (folder / f).is_file())
        return UserError(f"{folder / present}: no usable image processor settings in it")
    why = _first_line(e)
    return UserError(f"{folder}: cannot load the tokenizer/image processor ({why})")


def check_chat_template(folder: Path, processor) -> None:
    """Refuse a processor with no or an uncompilable chat template now, not at the first question."""
    if not getattr(processor, "chat_template", None):
        raise UserError(f"{folder}: chat_template.jinja missing (the model folder has no chat template: no "
                        f"chat_template.json either, none in tokenizer_config.json)")
    from jinja2 import TemplateSyntaxError

    probe = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    try:
        processor.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except TemplateSyntaxError as e:  # only syntax: a template may legitimately raise for odd conversations
        raise UserError(f"{folder}: chat template does not compile ({_first_line(e)}, line {e.lineno})") from None


def weights_problem(folder: Path, e: BaseException) -> UserError:
    """The error for weights that safetensors could not read: the damaged file named when one is."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    for f in sorted(folder.glob("model*.safetensors")):
        try:
            with safe_open(str(f), "pt"):
                pass
        except (SafetensorError, OSError) as err:
            return UserError(f"{f}: not a readable safetensors file ({_first_line(err)}) - damaged or cut short; "
                             f"copy the model folder again")
    return UserError(f"{folder}: cannot load model weights ({_first_line(e)})")
