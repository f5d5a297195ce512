"""Image-only processors for the Qwen2-VL family.

transformers' Qwen2-VL processor insists on a video processor, which needs torchvision; CPU machines and
laptops often lack it. This subclass passes ``video_processor=None`` and uses the PIL image processor, so a
model folder loads with nothing but transformers + Pillow. It saves/loads as a normal processor folder.
"""

from __future__ import annotations

from transformers import AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    # The sub-processor list is read from __init__'s signature: leaving `video_processor` out of it is what
    # stops ProcessorMixin from requiring (and type-checking) a video processor.
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kw):
        kw.pop("video_processor", None)
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kw)

    @classmethod
    def from_dir(cls, path: str, **kw) -> "ImageOnlyQwen2VLProcessor":
        tok = AutoTokenizer.from_pretrained(path, **kw)
        ip = Qwen2VLImageProcessorPil.from_pretrained(path, **kw)
        return cls(image_processor=ip, tokenizer=tok, chat_template=getattr(tok, "chat_template", None))
