"""`domainvlm chat`: multi-turn terminal chat about an image, with streamed answers.

Type an image path to (re)start the conversation about that image, then ask questions; text-only turns work
without an image. ``clear`` starts over, ``stop`` quits (Ctrl-D too); Ctrl-C stops the current answer.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..data.images import IMAGE_SUFFIXES
from ._args import add_model_options, add_sampling_options, engine_from_args, sampling_from_args

NAME = "chat"
HELP = "interactive chat about an image in the terminal (type an image path, then questions)"

TEXT = {
    "en": {"welcome": "domainvlm chat with {model}. Type an image path to look at an image, then ask about it. "
                      "'clear' starts over, 'stop' quits.",
           "user": "User: ", "model": "Model: ", "loaded": "[image {path} loaded ({w}x{h}); ask about it]",
           "cleared": "[conversation cleared]", "bye": "bye", "interrupted": "[answer stopped]",
           "error": "error: {msg}"},
    "zh": {"welcome": "domainvlm 对话（模型 {model}）。输入图像路径加载图像，然后提问；"
                      "输入 clear 重新开始，输入 stop 退出。",
           "user": "用户：", "model": "模型：", "loaded": "[已加载图像 {path}（{w}x{h}），请提问]",
           "cleared": "[对话已清空]", "bye": "再见", "interrupted": "[已停止回答]", "error": "错误：{msg}"},
}


def add_arguments(p):
    p.add_argument("--image", help="image to start with (file, DICOM, or wafer npz#N)")
    p.add_argument("--lang", choices=["en", "zh"], default="en", help="language of the chat's own messages")
    add_model_options(p)
    add_sampling_options(p)


def image_ref(line: str) -> str | None:
    """The image reference a line names, or None if the line is a question.

    Terminals quote dragged-in paths, so quotes are stripped. A line ending in an image suffix counts as an
    image path even when missing, so a typo gets 'not found' instead of being sent to the model as a question.
    """
    s = line.strip().strip("'\"")
    if not s or "\n" in s:
        return None
    # FILE#K picks map K of an npz or wafer K of a fab map file (lot42.xml#3, LOT#42.xml#3): test FILE itself
    m = re.fullmatch(r"(.+\.\w+)#\d+", s)
    indexed = m is not None
    p = Path(m.group(1) if m else s).expanduser()
    try:
        if p.is_file() or Path(s).expanduser().is_file():
            return s
    except OSError:  # over-long "paths" that are really questions
        return None
    return s if (indexed or p.suffix.lower() in IMAGE_SUFFIXES) and " " not in s.strip() else None


def run(args):
    from transformers.utils import logging as hf_logging

    from ..data.images import load_image
    from ..data.record import IMAGE_TOKEN
    from ..errors import UserError

    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    hf_logging.disable_progress_bar()
    t = TEXT[args.lang]
    sampling = sampling_from_args(args)
    # a bad --image is a command-line mistake: exit 2 before the model loads (typed paths only warn, below)
    first = load_image(args.image) if args.image else None
    eng = engine_from_args(args)
    out = sys.stdout
    print(t["welcome"].format(model=eng.model_dir), flush=True)
    history: list[dict] = []
    image = None

    def set_image(ref: str):
        nonlocal image, history
        try:
            img = load_image(ref)
        except UserError as e:
            print(t["error"].format(msg=e), flush=True)
            return
        image, history = img, []  # a new image starts a new conversation
        print(t["loaded"].format(path=ref, w=img.width, h=img.height), flush=True)

    if first is not None:
        image = first
        print(t["loaded"].format(path=args.image, w=first.width, h=first.height), flush=True)
    while True:
        try:
            line = input(t["user"])
        except EOFError:
            print(flush=True)
            break
        cmd = line.strip()
        if not cmd:
            continue
        if cmd.lower() in ("stop", "quit", "exit"):
            break
        if cmd.lower() == "clear":
            image, history = None, []
            print(t["cleared"], flush=True)
            continue
        ref = image_ref(cmd)
        if ref is not None:
            set_image(ref)
            continue
        if IMAGE_TOKEN in cmd:  # would be taken for an image slot; the model would fail on the count
            print(t["error"].format(msg=f"the question may not contain the reserved token '{IMAGE_TOKEN}'"),
                  flush=True)
            continue
        first_turn = not history
        content = f"{IMAGE_TOKEN}\n{cmd}" if image is not None and first_turn else cmd
        msgs = history + [{"role": "user", "content": content}]
        out.write(t["model"])
        out.flush()
        pieces = []
        it = eng.stream(msgs, [image] if image is not None else [], sampling)
        try:
            for piece in it:
                pieces.append(piece)
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            it.close()  # stops generation; keep what was said so far
            out.write(f"\n{t['interrupted']}")
        except Exception as e:  # noqa: BLE001 - keep the session alive; the turn is dropped
            it.close()
            print(f"\n{t['error'].format(msg=f'{e.__class__.__name__}: {e}')}", flush=True)
            continue
        out.write("\n")
        out.flush()
        history = msgs + [{"role": "assistant", "content": "".join(pieces).strip()}]
    print(t["bye"], flush=True)
    return 0
