"""Image-only processors for the Qwen2-VL family.

transformers' Qwen2-VL processor insists on a video processor, which needs torchvision; CPU machines and
laptops often lack it. This subclass passes ``video_processor=None`` and uses the PIL image processor, so a
model folder loads with nothing but transformers + Pillow.

It *saves* under the stock names (``Qwen2VLProcessor``, ``Qwen2VLImageProcessor``), so a folder we write is a
plain Qwen2-VL folder for any other tool (``AutoProcessor`` where torchvision is installed). We never rely on
the saved class name ourselves: :meth:`from_dir` builds the image-only processor from the folder's files
whatever class they name.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

STOCK_PROCESSOR = "Qwen2VLProcessor"
STOCK_IMAGE_PROCESSOR = "Qwen2VLImageProcessor"
_PIXEL_KEYS = ("min_pixels", "max_pixels")


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    # The sub-processor list is read from __init__'s signature: leaving `video_processor` out of it is what
    # stops ProcessorMixin from requiring (and type-checking) a video processor.
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kw):
        kw.pop("video_processor", None)
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kw)

    @classmethod
    def from_dir(cls, path: str, min_pixels: int | None = None, max_pixels: int | None = None,
                 **kw) -> "ImageOnlyQwen2VLProcessor":
        """The processor of a Qwen2-VL-family folder. ``min_pixels``/``max_pixels`` override the folder's
        image resolution (the image-token budget per image: the usual out-of-memory cure for real bases)."""
        tok = AutoTokenizer.from_pretrained(path, **kw)
        ip = Qwen2VLImageProcessorPil.from_pretrained(path, **kw)
        set_resolution(ip, min_pixels, max_pixels)
        template = folder_chat_template(Path(path)) or getattr(tok, "chat_template", None)
        return cls(image_processor=ip, tokenizer=tok, chat_template=template)

    def to_dict(self):
        out = super().to_dict()
        out["processor_class"] = STOCK_PROCESSOR
        return out

    def save_pretrained(self, save_directory, **kw):
        files = super().save_pretrained(save_directory, **kw)
        stock_names(save_directory)
        return files


def folder_chat_template(folder: Path):
    """A folder's processor chat template, found as stock ``ProcessorMixin.from_pretrained`` finds it: the legacy
    chat_template.json (what 4.x processors saved; many hub folders still ship only it) before
    chat_template.jinja (what 5.x saves). None when neither exists: the tokenizer's own template then applies
    (chat_template.jinja again, or tokenizer_config.json's). Malformed JSON raises ValueError, which the loader
    reports naming the file."""
    legacy = folder / "chat_template.json"
    if legacy.is_file():
        d = json.loads(legacy.read_text(encoding="utf-8"))
        template = d.get("chat_template") if isinstance(d, dict) else None
        if not isinstance(template, (str, dict)) or not template:
            from ..errors import UserError

            raise UserError(f"{legacy}: field 'chat_template' missing (it should hold the template text)")
        return template
    jinja = folder / "chat_template.jinja"
    return jinja.read_text(encoding="utf-8") if jinja.is_file() else None


def set_resolution(ip, min_pixels: int | None, max_pixels: int | None) -> None:
    """Set a Qwen2-VL image processor's pixel budget (``size`` holds it as shortest/longest edge)."""
    if min_pixels is None and max_pixels is None:
        return
    from ..errors import UserError

    lo = min_pixels if min_pixels is not None else ip.size["shortest_edge"]
    hi = max_pixels if max_pixels is not None else ip.size["longest_edge"]
    if lo > hi:
        raise UserError(f"--min-pixels {lo} is above --max-pixels {hi}")
    ip.size = type(ip.size)(shortest_edge=lo, longest_edge=hi)


def stock_names(folder) -> None:
    """Rewrite the class names in a saved folder's processor/tokenizer JSON to the stock transformers ones
    (the tokenizer records the processor class it was saved from)."""
    for name in ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json"):
        p = Path(folder) / name
        if not p.exists():
            continue
        d = json.loads(p.read_text(encoding="utf-8"))
        new = _renamed(d)
        if name == "processor_config.json":
            new = with_video_processor(new)
        if new != d:
            p.write_text(json.dumps(new, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


# what a video processor shares with the image processor (its own resolution defaults are for videos)
_VIDEO_KEYS = ("do_convert_rgb", "do_normalize", "do_rescale", "do_resize", "image_mean", "image_std", "merge_size",
               "patch_size", "resample", "rescale_factor", "temporal_patch_size")


def with_video_processor(d: dict) -> dict:
    """A processor_config.json dict with a ``video_processor`` entry. Stock ``AutoProcessor`` loads a Qwen2-VL
    processor's video processor from this entry (or a video_preprocessor_config.json) and refuses the folder
    without one, torchvision or not; our image-only processor never reads it."""
    ip = d.get("image_processor")
    if not isinstance(ip, dict) or "video_processor" in d:
        return d
    video = {k: ip[k] for k in _VIDEO_KEYS if k in ip}
    return {**d, "video_processor": {**video, "video_processor_type": "Qwen2VLVideoProcessor"}}


def _renamed(d):
    if not isinstance(d, dict):
        return d
    out = {}
    for k, v in d.items():
        if k == "processor_class" and v == ImageOnlyQwen2VLProcessor.__name__:
            v = STOCK_PROCESSOR
        elif k == "image_processor_type" and v == Qwen2VLImageProcessorPil.__name__:
            v = STOCK_IMAGE_PROCESSOR
        out[k] = _renamed(v)
    return out
