"""Evidence and fact answers of the bundled wafer expert on a few maps (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from domainvlm.domains.wafer.render import render_map
from domainvlm.domains.wafer.synth import synth_map_with_masks
from domainvlm.models.loader import BUNDLED

EXAMPLES = Path(BUNDLED).parent / "examples"


@pytest.fixture(scope="module")
def engine():
    from domainvlm.inference.engine import Engine

    return Engine(device="cpu", threads=2)


def _ask(engine, q, img):
    return engine.generate([([{"role": "user", "content": f"<image>\n{q}"}], [img])])[0]


def test_evidence_points_at_the_pattern_dies_and_says_where(engine):
    from domainvlm.domains.wafer.evidence import annotator
    from domainvlm.inference.assessment import Assessment

    m, gt = synth_map_with_masks(("Loc",), 52, np.random.default_rng(3))
    img = render_map(m, size=224)
    att = annotator(engine.answer_head)
    ev, masks = att.evidence(img, ("Loc",))
    (e,) = ev
    assert gt["Loc"][tuple(e["top_die"])]  # the top die is one the pattern placed
    iou = (masks["Loc"] & gt["Loc"]).sum() / (masks["Loc"] | gt["Loc"]).sum()
    assert iou > 0.3 and e["n_dies"] == len(e["dies"]) > 0
    assert all(m[r, c] == 2 for r, c in e["dies"])  # only failing dies support a pattern
    assert "o'clock" in e["text"]["en"] and "点钟" in e["text"]["zh"]
    a = Assessment(labels=("Loc",), confidence=0.9)
    with torch.inference_mode():  # as the engine calls its head
        att(a, img, "en")
    assert a.evidence and a.evidence[0]["pattern"] == "Loc"


def test_ask_writes_the_evidence_png(tmp_path, capsys):
    from PIL import Image

    from domainvlm.cli import main

    out = tmp_path / "ev" / "scratch.png"
    assert main(["ask", "--image", str(EXAMPLES / "wafer_scratch.png"), "--threads", "2", "--evidence-png",
                 str(out), "What defect pattern does this wafer map show?"]) == 0
    assert capsys.readouterr().out.startswith("Diagnosis: Scratch")
    over = Image.open(out)
    assert over.mode == "RGB" and over.width == 448 and over.height > over.width  # the map at 2x, a legend
    a = np.asarray(over)
    assert (a[..., 0].astype(int) - a[..., 2] > 100).any()  # the scratch's dies tinted red
    assert [p.name for p in out.parent.iterdir()] == ["scratch.png"]  # no temporary file left


def test_ask_writes_no_evidence_png_for_an_image_it_turned_away(tmp_path, capsys):
    """A steel photo got 'does not look like a wafer map' and yet an overlay captioned 'Random: ... 29 dies'."""
    from PIL import Image

    from domainvlm.cli import main

    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "ev.png"
    assert main(["ask", "--image", str(photo), "--threads", "2", "--evidence-png", str(out)]) == 0
    cap = capsys.readouterr()
    assert "does not look like a wafer map" in cap.out and "nothing written" in cap.err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["photo.png"]


def test_fact_questions_are_answered_from_the_map(engine):
    from domainvlm.data.images import load_image
    from domainvlm.domains.wafer.canvas import canonical_image
    from domainvlm.domains.wafer.dies import read_dies
    from domainvlm.domains.wafer.facts import map_facts

    m, _ = synth_map_with_masks(("Center",), 52, np.random.default_rng(0))
    img = render_map(m, size=224)
    f = map_facts(m)
    assert f"{f['yield_pct']:.1f}%" in _ask(engine, "What is the yield?", img)
    assert f"{f['failing']}颗" in _ask(engine, "有多少颗芯片失效？", img)
    scratch = canonical_image(load_image(str(EXAMPLES / "wafer_scratch.png")))
    assert read_dies(scratch).grid.shape[0] > 10
    where = _ask(engine, "Where is the scratch?", scratch)
    assert where.startswith("Scratch:") and "o'clock" in where
    assert _ask(engine, "Where is the donut?", scratch).startswith("No Donut is seen")
    assert _ask(engine, "What defect pattern does this wafer map show?", scratch).startswith("Diagnosis: Scratch")


def test_evidence_of_a_map_drawn_at_another_size_than_the_canvas(engine):
    """A 260 px picture: the attributions are on the model's 224 px canvas, the dies read from the picture
    (per_die reshaped the 224 px array into the 260 px die blocks: ValueError in ask --json and the API)."""
    from domainvlm.domains.wafer.dies import read_dies
    from domainvlm.domains.wafer.evidence import annotator

    m, gt = synth_map_with_masks(("Loc",), 52, np.random.default_rng(3))
    img = render_map(m, size=260)
    dies = read_dies(img)
    px = np.ones((224, 224))
    assert dies.per_die(px).sum() == pytest.approx(224 * 224 * dies.grid.size * dies.k ** 2 / 260 ** 2)
    (e,), masks = annotator(engine.answer_head).evidence(img, ("Loc",))
    assert all(m[r, c] == 2 for r, c in e["dies"])
    assert (masks["Loc"] & gt["Loc"]).sum() / (masks["Loc"] | gt["Loc"]).sum() > 0.3
    # the model sees the picture squeezed onto its canvas, so the top die may sit one die off the drawn cluster
    assert np.abs(np.argwhere(gt["Loc"]) - e["top_die"]).max(1).min() <= 1


def test_evidence_dies_are_in_the_maps_own_frame(engine, tmp_path):
    """A map with off-wafer margin rows and columns (MixedWM38 maps have one): the dies were reported in the
    frame cropped to the wafer's bounding box, (3, 2) off the map's own row / col here. Now in the map's frame
    (``frame: map`` where the picture was drawn from the map, ``picture`` for a picture's own die grid, the
    same for a map drawn edge to edge), and the overlay tints those very dies."""
    from domainvlm.data.images import load_image
    from domainvlm.domains.wafer.batch_load import MapCanvas
    from domainvlm.domains.wafer.canvas import canonical_image
    from domainvlm.domains.wafer.evidence import annotator
    from domainvlm.domains.wafer.overlay import evidence_overlay

    m, gt = synth_map_with_masks(("Loc",), 48, np.random.default_rng(3))
    pad = np.pad(m, ((3, 1), (2, 2)))  # 52 x 52, off-wafer margins
    loc = np.pad(gt["Loc"], ((3, 1), (2, 2)))
    render_map(pad).save(tmp_path / "m.png")
    pics = [("map", render_map(pad, size=224)), ("map", MapCanvas(pad, 224).to_pil()),
            ("map", canonical_image(render_map(pad, size=300))), ("map", render_map(pad, size=260)),
            ("picture", canonical_image(load_image(str(tmp_path / "m.png"))))]
    att = annotator(engine.answer_head)
    for frame, pic in pics:
        (e,), _ = att.evidence(pic, ("Loc",))
        assert e["dies"] and all(pad[r, c] == 2 for r, c in e["dies"]), frame
        assert np.abs(np.argwhere(loc) - e["top_die"]).max(1).min() <= 1, frame
        assert (e.get("frame"), e["grid"]) == (frame, [52, 52]), frame
    over = np.asarray(evidence_overlay(pics[0][1], [e]))  # 224 canvas: 4 px a die from pixel 8, drawn at 2x
    tinted = {(r, c) for r in range(52) for c in range(52) if over[2 * (8 + 4 * r + 2), 2 * (8 + 4 * c + 2), 0] > 200}
    assert tinted == {tuple(d) for d in e["dies"]}
