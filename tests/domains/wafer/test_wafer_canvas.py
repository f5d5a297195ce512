"""Fixed-canvas rendering and dihedral augmentation of wafer maps (labels kept, maps transformed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from domainvlm.domains.wafer.canvas import CANVAS, canonical_image, canvas_batch, canvas_rgb, dihedral
from domainvlm.domains.wafer.render import render_map
from domainvlm.domains.wafer.synth import synth_map


def _maps():
    rng = np.random.default_rng(0)
    maps = [synth_map(("Loc",), 52, rng), synth_map(("Scratch",), 27, rng), synth_map((), 52, rng)]
    maps.append(rng.integers(0, 3, size=(15, 22)).astype(np.uint8))  # WM-811K's smallest shape
    maps.append(rng.integers(0, 3, size=(212, 204)).astype(np.uint8))  # and its largest
    return maps


def test_canvas_batch_equals_render_map():
    maps = _maps()
    cb = canvas_batch(maps)
    assert cb.shape == (len(maps), CANVAS, CANVAS)
    for m, c in zip(maps, cb):
        assert np.array_equal(canvas_rgb(c), np.asarray(render_map(m, size=CANVAS)))


def test_canvas_keeps_every_fail_die_of_the_largest_wm811k_map():
    m = np.ones((212, 204), np.uint8)
    m[100, 7] = 2  # one isolated fail die
    assert (canvas_batch([m])[0] == 2).sum() == 1  # k = 1: one pixel per die, none dropped


@pytest.mark.parametrize("k", range(8))
def test_dihedral_is_a_symmetry_with_inverse(k):
    m = synth_map(("Edge-Loc", "Loc"), 52, np.random.default_rng(k))
    y = dihedral(m, k)
    assert y.shape == m.shape and (y == 2).sum() == (m == 2).sum()  # same dies, moved
    inv = {0: 0, 1: 3, 2: 2, 3: 1, 4: 4, 5: 5, 6: 6, 7: 7}[k]  # mirrors are their own inverse
    assert np.array_equal(dihedral(y, inv), m)


def test_dihedral_gives_eight_distinct_maps_and_agrees_across_types():
    import torch

    m = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    outs = [dihedral(m, k) for k in range(8)]
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8
    for k in range(8):
        assert np.array_equal(dihedral(torch.from_numpy(m), k).numpy(), outs[k])
        img = render_map(m)
        from domainvlm.domains.wafer.render import image_to_map

        assert np.array_equal(image_to_map(dihedral(img, k)), outs[k])
    with pytest.raises(ValueError):
        dihedral(m, 8)


def test_canonical_image_redraws_unpadded_renders_only():
    m = synth_map(("Center",), 52, np.random.default_rng(1))
    assert np.array_equal(np.asarray(canonical_image(render_map(m))), np.asarray(render_map(m, size=CANVAS)))
    photo = Image.new("RGB", (100, 80), (200, 10, 10))  # not the wafer palette: left to the processor
    assert canonical_image(photo).size == (100, 80)


def test_record_dataset_dihedral_keeps_labels_and_transforms_images(tmp_path, monkeypatch):
    import torch

    from domainvlm.data.record import Record
    from domainvlm.train import dataset as ds_mod

    m = synth_map(("Edge-Loc",), 52, np.random.default_rng(2))
    png = tmp_path / "m.png"
    render_map(m).save(png)
    rec = Record(id="a", images=[str(png)], labels={"task": "wafer", "defects": ["Edge-Loc"]},
                 messages=[{"role": "user", "content": "<image>\nDiagnose."},
                           {"role": "assistant", "content": "Diagnosis: Edge-Loc"}])
    seen = []
    monkeypatch.setattr(ds_mod, "encode_train", lambda proc, msgs, imgs, n: seen.append((msgs, imgs)) or {})
    d = ds_mod.RecordDataset([rec], processor=None, max_length=64, augment="dihedral")
    for epoch in range(24):  # one transform per (seed, epoch, index): it changes from epoch to epoch
        d.set_epoch(epoch)
        d[0]
        d[0]  # the same item twice in one epoch: the same transform
        assert np.array_equal(np.asarray(seen[-1][1][0]), np.asarray(seen[-2][1][0]))
    from domainvlm.domains.wafer.render import image_to_map

    got = {image_to_map(imgs[0]).tobytes() for _, imgs in seen}
    assert len(got) > 1  # maps were transformed
    assert all(msgs == rec.messages for msgs, _ in seen) and rec.labels["defects"] == ["Edge-Loc"]
    expected = {dihedral(m, k).tobytes() for k in range(8)}
    assert got <= expected
    with pytest.raises(Exception, match="augment"):
        ds_mod.RecordDataset([rec], processor=None, max_length=64, augment="mixup")


def test_maps_drawn_at_the_canvas_equal_the_redrawn_unpadded_render(shared_data):
    """eval/predict draw raw maps (file.npz#i) straight at the model's canvas; the head used to get them
    unpadded and redraw them: both give the same pixels, so the answers are the same."""
    import numpy as np

    from domainvlm.data.images import load_image
    from domainvlm.domains.wafer.canvas import canonical_image

    for rel in ("mixedwm38/mixedwm38_trainval.npz", "wm811k/wm811k_trainval.npz"):
        for i in range(0, 2000, 40):
            ref = f"{shared_data / rel}#{i}"
            direct = np.asarray(load_image(ref, None, 224))
            assert direct.shape == (224, 224, 3)
            assert np.array_equal(direct, np.asarray(canonical_image(load_image(ref)))), ref
