"""eval's and predict's fast path for ``file.npz#N``: die grids (MapCanvas) drawn on the device must give
byte-identical canvases, pixel values and answers to the PIL render path, and bad references one line each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domainvlm.domains.wafer.batch_load import MapCanvas, canvas_pixels
from domainvlm.domains.wafer.canvas import canvas_batch
from domainvlm.domains.wafer.render import _LUT, render_map
from domainvlm.domains.wafer.npz_writers import save_mixedwm38_npz, save_wm811k_npz
from domainvlm.domains.wafer.sources import WaferSet, load_wafer_file
from domainvlm.domains.wafer.synth import synth_set

# WM-811K spans 15x22 .. 212x204; 1x1, exactly the canvas, and larger than it (subsampled) are the edges
SHAPES = [(52, 52), (15, 22), (22, 15), (212, 204), (113, 112), (1, 1), (224, 224), (230, 100), (300, 300), (25, 27)]


def _random_maps(n_per_shape=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 3, s, dtype=np.uint8) for s in SHAPES for _ in range(n_per_shape)]


@pytest.mark.parametrize("size", [224, 64])
def test_device_canvas_equals_numpy_canvas_and_pil_render(size):
    maps = _random_maps()
    rng = np.random.default_rng(1)
    maps = [maps[i] for i in rng.permutation(len(maps))]  # shapes interleaved: groups scatter into the batch
    host = canvas_batch(maps, size)
    dev = canvas_batch(maps, size, device="cpu")
    assert dev.dtype == torch.uint8 and np.array_equal(dev.numpy(), host)
    for m, c in zip(maps, host):
        assert np.array_equal(_LUT[c], np.asarray(render_map(m, size=size)))


def test_device_canvas_on_real_maps_of_every_wm811k_shape(shared_data):
    ws = load_wafer_file(shared_data / "wm811k" / "wm811k_trainval.npz")
    first = {}
    for i, m in enumerate(ws.maps):
        first.setdefault(m.shape, i)
    mix = load_wafer_file(shared_data / "mixedwm38" / "mixedwm38_trainval.npz")
    maps = [ws.maps[i] for i in sorted(first.values())] + mix.maps[:500]
    dev = canvas_batch(maps, 224, device="cpu").numpy()
    assert len(first) > 100
    for m, c in zip(maps, dev):
        assert np.array_equal(_LUT[c], np.asarray(render_map(m, size=224)))


@pytest.fixture(scope="module")
def engine():
    from domainvlm.inference.engine import Engine

    return Engine(device="cpu", threads=2)  # the bundled wafer expert


def test_head_pixels_of_die_grids_equal_those_of_pil_renders(engine):
    head = engine.answer_head
    maps = _random_maps(2) + synth_set(20, seed=3).maps
    pv_fast, g_fast = head.pixel_values([MapCanvas(m, head.size) for m in maps])
    pv_pil, g_pil = head.pixel_values([render_map(m, size=head.size) for m in maps])
    assert torch.equal(pv_fast, pv_pil) and torch.equal(g_fast, g_pil)
    assert torch.equal(canvas_pixels(head, maps)[0], pv_pil)
    mixed = [MapCanvas(maps[0], head.size), render_map(maps[1], size=head.size)]  # one batch, both kinds
    assert torch.equal(head.pixel_values(mixed)[0], head.pixel_values([render_map(m, size=head.size)
                                                                        for m in maps[:2]])[0])


def _disc(rng, shape):
    """Random pass/fail dies on the ellipse of ``shape`` (a wafer: the input check turns away other shapes)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 <= 1
    return np.where(inside, rng.integers(1, 3, shape), 0).astype(np.uint8)


@pytest.fixture(scope="module")
def wafer_files(tmp_path_factory):
    """A MixedWM38-layout npz (52x52) and a WM-811K-layout npz of mixed shapes, 24 maps each."""
    d = tmp_path_factory.mktemp("maps")
    mix = synth_set(24, seed=5)
    save_mixedwm38_npz(mix, d / "mix.npz", with_split=False)
    rng = np.random.default_rng(2)
    maps = [_disc(rng, SHAPES[i % 6]) for i in range(24)]
    wm = WaferSet(maps, [("Center",) if i % 2 else () for i in range(24)], None, "wm811k", "wm811k", "x")
    save_wm811k_npz(wm, d / "wm.npz")
    return d


def _records(path):
    from domainvlm.data.sources import load_any

    return load_any(path, langs=("en", "zh"), explain=True)


@pytest.mark.parametrize("name", ["mix.npz", "wm.npz"])
def test_eval_answers_and_metrics_unchanged_by_the_fast_path(engine, wafer_files, name, monkeypatch):
    from domainvlm import domains
    from domainvlm.evaluate.runner import evaluate_records

    recs = _records(wafer_files / name)
    fast = evaluate_records(engine, recs, wafer_files, 8, None, progress=False)
    monkeypatch.setattr(domains.get("wafer"), "load_batch", None)  # every map through load_image + PIL
    slow = evaluate_records(engine, recs, wafer_files, 8, None, progress=False)
    assert fast == slow
    # a 1x1 "map" of one failing die is all-fail: the bundled taxonomy names that (Near-full), so no abstention
    assert fast[0]["n"] == 24 and fast[0]["unparsed"] == 0


def test_predict_rows_unchanged_by_the_fast_path(engine, wafer_files, tmp_path, monkeypatch):
    import json

    from domainvlm import domains
    from domainvlm.commands.predict import predict_rows
    from domainvlm.inference.batch_io import ResultWriter, read_inputs
    from domainvlm.inference.engine import Sampling

    inp = tmp_path / "in.jsonl"
    lines = [{"id": str(i), "image": f"wm.npz#{i}", "question": "Diagnose this wafer map."} for i in range(12)]
    lines.append({"id": "bad", "image": "wm.npz#99", "question": "Diagnose this wafer map."})
    lines.append({"id": "gone", "image": "missing.npz#0", "question": "Diagnose this wafer map."})
    inp.write_text("".join(json.dumps(d) + "\n" for d in lines))
    (tmp_path / "wm.npz").write_bytes((wafer_files / "wm.npz").read_bytes())

    def run(out):
        w = ResultWriter(out, overwrite=True)
        predict_rows(engine, read_inputs(inp), w, Sampling(), 5)
        w.close()
        return [json.loads(x) for x in out.read_text().splitlines()]

    fast = run(tmp_path / "fast.jsonl")
    monkeypatch.setattr(domains.get("wafer"), "load_batch", None)
    assert run(tmp_path / "slow.jsonl") == fast
    by_id = {r["id"]: r for r in fast}
    assert by_id["bad"]["error"] == f"{inp}:13: {tmp_path / 'wm.npz'}#99: index out of range (file has 24 maps)"
    assert by_id["gone"]["error"] == f"{inp}:14: {tmp_path / 'missing.npz'}: image not found"
    assert all(by_id[str(i)]["answer"].startswith("Diagnosis:") for i in range(12) if SHAPES[i % 6] != (1, 1))


def test_loader_names_the_record_and_reference_in_one_line(wafer_files):
    from domainvlm.data.images import load_image
    from domainvlm.inference.loading import load_conversations

    msgs = [{"role": "user", "content": "<image>\nDiagnose this wafer map."}]
    png = wafer_files / "one.png"
    render_map(synth_set(1, seed=9).maps[0]).save(png)
    refs = ["mix.npz#3", "mix.npz#24", "mix.npz#x", "nope.npz#1", str(png), "mix.npz#-1", "wm.npz#5"]
    out = load_conversations([(msgs, [r], wafer_files, f"record r{k}") for k, r in enumerate(refs)], 224)
    assert isinstance(out[0][0][1][0], MapCanvas) and out[0][1] is None
    assert out[1] == (None, f"record r1: {wafer_files / 'mix.npz'}#24: index out of range (file has 24 maps)")
    assert out[2] == (None, "record r2: mix.npz#x: image reference index must be an integer")
    assert out[3] == (None, f"record r3: {wafer_files / 'nope.npz'}: image not found")
    assert np.array_equal(np.asarray(out[4][0][1][0]), np.asarray(load_image(str(png))))  # via load_image
    assert out[5][1].endswith("#-1: index out of range (file has 24 maps)")
    assert isinstance(out[6][0][1][0], MapCanvas) and out[6][0][1][0].grid.shape == SHAPES[5]
    assert all("\n" not in (err or "") for _, err in out)


def test_map_canvas_draws_what_load_image_draws(wafer_files):
    from domainvlm.data.images import as_pil, load_image
    from domainvlm.inference.loading import load_conversations

    (conv, _), = load_conversations([([], ["wm.npz#7"], wafer_files, "r")], 224)
    mc = conv[1][0]
    assert np.array_equal(np.asarray(as_pil(mc)), np.asarray(load_image("wm.npz#7", wafer_files, 224)))
    # no fixed canvas (a generic model): every map through load_image, unpadded as before
    (conv, _), = load_conversations([([], ["wm.npz#7"], wafer_files, "r")], None)
    assert np.array_equal(np.asarray(conv[1][0]), np.asarray(load_image("wm.npz#7", wafer_files)))


def test_fast_path_reads_the_index_after_the_last_hash(tmp_path):
    """'LOT#42/maps.npz#3': '#K' is the last '#' (data/images.resolve), so the fast path serves it too."""
    from domainvlm.domains.wafer.batch_load import load_batch

    d = tmp_path / "LOT#42"
    d.mkdir()
    ws = synth_set(4, seed=1)
    save_mixedwm38_npz(ws, d / "maps.npz", with_split=False)
    (got,) = load_batch([(f"{d}/maps.npz#3", None)], 64)
    assert isinstance(got, MapCanvas) and np.array_equal(got.grid, load_wafer_file(d / "maps.npz").maps[3])
