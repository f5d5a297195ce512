"""Gradio chat UI: upload or webcam image, streamed multi-turn answers, example images, sampling controls.

The conversation lives in a ``gr.State`` of domainvlm messages (the chatbot only displays it), so the UI
does not depend on Gradio's message format. Choosing another image starts a new conversation.
"""

from __future__ import annotations

import os

# Before gradio is imported: no telemetry or version checks, and nothing fetched at start.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

from ..data.images import PIL_SUFFIXES, is_junk  # noqa: E402
from ..data.record import IMAGE_TOKEN  # noqa: E402
from ..inference.engine import Engine, Sampling  # noqa: E402

EXAMPLE_QUESTION = "What defect pattern does this wafer map show?"


def example_images(folder: str | Path | None = None, cache: str | Path | None = None,
                   domain: str = "wafer") -> list[str]:
    """Images from ``folder`` (up to 8), else the examples a domain provides (the bundled wafer expert's
    domain by default: a few synthetic wafer maps rendered once into ``cache``)."""
    if folder:  # the image box shows what PIL opens (not DICOM)
        files = sorted(p for p in Path(folder).expanduser().iterdir()
                       if p.suffix.lower() in PIL_SUFFIXES and not is_junk(p.name))  # not ._x.png, .x.png
        return [str(p) for p in files[:8]]
    from .. import domains

    make = domains.get(domain).extra.get("example_images")
    return make(cache) if make else []


def _domain_inputs(gr, image, engine) -> None:
    """Extra inputs that fill the image box (``Domain.extra["webui_inputs"]``, e.g. a wafer-map file box): those
    of the domain whose answer head the model has (a steel-photo model gets no wafer-map box), every domain's
    for a model without a head (a base may be asked about anything)."""
    from .. import domains
    from ..inference.answer_heads import head_name

    head = head_name(engine.model) if engine.has_head else None
    for d in domains.all_domains():
        if d.extra.get("webui_inputs") and (head is None or head in d.answer_heads):
            d.extra["webui_inputs"](gr, image)


def _display(history: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"].replace(IMAGE_TOKEN, "").strip()} for m in history]


def build_demo(engine: Engine, defaults: Sampling | None = None, examples: list[str] | None = None,
               title: str = "domainvlm", example_question: str | None = EXAMPLE_QUESTION,
               max_upload_mb: float | None = None):
    from dataclasses import replace

    import gradio as gr

    from .image_box import ImageBox

    d = engine.effective_sampling(defaults or Sampling())  # the sliders show what will really be used
    own_question = _own_question(engine)

    def respond(question, image, history, max_new, temperature, top_p, top_k):
        question = (question or "").strip()
        history = list(history or [])
        if not question and image is not None and not history and own_question:  # Send on an image alone
            question = own_question
        if not question:
            yield _display(history), history, ""
            return
        if IMAGE_TOKEN in question:  # taken for an image slot, the model would fail on the image count
            raise gr.Error(f"the question may not contain the reserved token '{IMAGE_TOKEN}'")
        content = f"{IMAGE_TOKEN}\n{question}" if image is not None and not history else question
        msgs = history + [{"role": "user", "content": content}]
        images = [image.convert("RGB")] if image is not None and IMAGE_TOKEN in msgs[0]["content"] else []
        s = replace(d, max_new_tokens=int(max_new), temperature=float(temperature), top_p=float(top_p),
                    top_k=int(top_k), cut_head_answers=True)  # the slider holds for a head's answer too
        shown = _display(msgs) + [{"role": "assistant", "content": ""}]
        yield shown, history, ""
        text = ""
        try:
            for piece in engine.stream(msgs, images, s):
                text += piece
                shown[-1]["content"] = text.strip()
                yield shown, history, ""
        except Exception as e:  # noqa: BLE001 - show it in the chat; the session stays usable
            raise gr.Error(f"generation failed: {e.__class__.__name__}: {e}") from None
        history = msgs + [{"role": "assistant", "content": text.strip()}]
        yield _display(history), history, ""

    draw = getattr(engine.answer_head, "evidence_image", None) if engine.has_head else None

    def show_evidence(image, history):
        """Where the model sees each named pattern, after a first answer about an image (heads that give it)."""
        if draw is None or image is None or len(history or []) != 2:
            return None
        return draw(history[:1], image.convert("RGB"), history[1]["content"])

    def reset():
        return [], [], ""

    def new_conversation():  # keeps a question typed before the image was chosen
        return [], []

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"## {title}\nUpload a picture (or use the webcam), ask a question, keep talking. "
                    "A new image starts a new conversation.")
        history = gr.State([])
        with gr.Row():
            with gr.Column(scale=2):
                image = ImageBox(type="pil", sources=["upload", "webcam", "clipboard"], label="Image",
                                 elem_id="image", height=320)
                if max_upload_mb:
                    image.max_upload_bytes = int(max_upload_mb * 2**20)
                _domain_inputs(gr, image, engine)
                with gr.Accordion("Sampling", open=False):
                    max_new = gr.Slider(1, 1024, value=d.max_new_tokens, step=1, label="max new tokens",
                                        elem_id="max-new-tokens")
                    temperature = gr.Slider(0.0, 2.0, value=d.temperature, step=0.05,
                                            label="temperature (0 = greedy)")
                    top_p = gr.Slider(0.05, 1.0, value=d.top_p, step=0.05, label="top-p")
                    top_k = gr.Slider(0, 200, value=d.top_k, step=1, label="top-k (0 = off)")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", elem_id="chatbot", height=420, render_markdown=False,
                                     feedback_options=None)
                question = gr.Textbox(label="Question", placeholder="Ask about the image, press Enter" + (
                                          f" (empty: {own_question!r})" if own_question else ""),
                                      elem_id="question", lines=1)
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear = gr.Button("Clear", elem_id="clear")
                evidence = gr.Image(type="pil", label="Evidence: the dies behind each named pattern",
                                    elem_id="evidence", interactive=False, visible=draw is not None)
        if examples and example_question:
            gr.Examples([[p, example_question] for p in examples], inputs=[image, question],
                        label="Examples (click one, then Send)")
        elif examples:  # the user's own images (chest X-rays, photos): no wafer question put in their mouth
            gr.Examples([[p] for p in examples], inputs=[image], label="Examples (click one, ask, then Send)")
        inputs = [question, image, history, max_new, temperature, top_p, top_k]
        outputs = [chatbot, history, question]
        # One queue group: a reset triggered by a new image is applied before the answer that follows it.
        for ev in (send.click, question.submit):
            ev(respond, inputs, outputs, concurrency_id="chat").then(show_evidence, [image, history], evidence,
                                                                     concurrency_id="chat")
        clear.click(reset, None, outputs, concurrency_id="chat")
        image.change(new_conversation, None, [chatbot, history], concurrency_id="chat")
    return demo


def launch(demo, host: str = "127.0.0.1", port: int = 7860, share: bool = False, concurrency: int = 1,
           auth: tuple[str, str] | None = None, max_upload_mb: float = 20):
    """Queue requests (one generation at a time per engine) and serve; blocks until stopped."""
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    return demo.launch(server_name=host, server_port=port, share=share, inbrowser=False, show_error=True,
                       ssr_mode=False, mcp_server=False, pwa=False, enable_monitoring=False, auth=auth,
                       footer_links=["api"], max_file_size=int(max_upload_mb * 2**20))


def _own_question(engine) -> str | None:
    """The question an answer-head model is asked about an image sent without one (domains.default_question),
    None for other models: their users say what they want to know."""
    from ..domains import default_question
    from ..inference.answer_heads import head_name

    return default_question(head_name(engine.model)) if engine.has_head else None

