"""Web UI: a file box for fab wafer-map files next to the image box; the chosen wafer is drawn into the image
box (which starts a new conversation, as any new image does)."""

from __future__ import annotations

from ....errors import UserError


def render_wafer(path, index) -> object:
    """The PIL image of wafer ``index`` of an uploaded map file (a one-line UserError otherwise)."""
    from ..render import render_map
    from . import read_maps

    maps = read_maps(path)
    k = int(index or 0)
    if not 0 <= k < len(maps):
        raise UserError(f"{path}#{k}: field #K: index out of range (the file holds {len(maps)} wafers)")
    return render_map(maps[k].grid)


def add_map_upload(gr, image) -> None:
    with gr.Row():
        upload = gr.File(label="... or a wafer-map file (SEMI G85 / E142, STDF, KLARF)", type="filepath",
                         file_count="single", elem_id="mapfile")
        index = gr.Number(value=0, precision=0, minimum=0, label="wafer #K", elem_id="wafer-index")

    def show_map_file(path, k):
        if not path:
            return gr.update()
        try:
            return render_wafer(path, k)
        except UserError as e:
            raise gr.Error(str(e)) from None

    upload.upload(show_map_file, [upload, index], image, concurrency_id="chat")
    index.change(show_map_file, [upload, index], image, concurrency_id="chat")
