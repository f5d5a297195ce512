"""The web UI's image box: an uploaded file is decoded by domainvlm's own image reader, not gradio's.

gradio opens uploads with ``PIL.Image.open`` and, for a corrupt, truncated or non-image file, logs a traceback
and shows the user "Could not preprocess input component ..." with the server's temp path. Here the bytes go
through :func:`~domainvlm.inference.image_input.decode_image` (the HTTP API's reader: pixel limit checked from
the header before decoding, DICOM and wafer-map files understood), and a bad file is one line naming the
uploaded file, with no traceback.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..inference.image_input import DEFAULT_MAX_PIXELS, ImageInputError, decode_image

MAX_UPLOAD_BYTES = 20 << 20  # the default; launch() gives gradio the same limit (max_file_size)


class ImageBox(gr.Image):
    """No ``__init__`` of its own: gradio sends the front end the props named in the component's constructor
    signature, and a ``(*args, **kw)`` one sent none (no ``sources``: the page failed to render)."""

    is_template = True  # rendered by gradio's own Image front-end component
    max_pixels = DEFAULT_MAX_PIXELS  # set on the instance to change it
    max_upload_bytes = MAX_UPLOAD_BYTES  # likewise (webui --max-upload-mb: full-size DR DICOMs are 20-30 MB)

    def preprocess(self, payload):
        if payload is None or payload.path is None or self.type != "pil":  # data: URLs (webcam): gradio's way
            return super().preprocess(payload)
        name = Path(payload.orig_name or "image").name
        try:
            path = Path(payload.path)
            if path.stat().st_size > self.max_upload_bytes:
                mb = self.max_upload_bytes / 2**20
                raise ImageInputError(f"{name}: file over {mb:g} MB (webui --max-upload-mb)")
            return decode_image(path.read_bytes(), name, self.max_pixels)
        except (ImageInputError, OSError) as e:
            msg = str(e) if isinstance(e, ImageInputError) else f"{name}: cannot read the upload"
            raise gr.Error(msg, print_exception=False) from None
