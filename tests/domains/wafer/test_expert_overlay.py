"""New-class maps laid over replay maps (new_overlay_frac, domains/wafer/expert_overlay.py): labels are the union,
the pattern stays on the replay map's wafer, orientation-bound maps are never turned or shifted, bad setups are
one line. Synthetic maps only (no ../shared data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

YAML = """name: tiny-fab
classes:
  - name: Reticle-Repeat
  - name: Notch-Cluster
combinations:
  - [Center, Reticle-Repeat]
  - [Center, Notch-Cluster]
"""


def _banks(tmp_path, new_sets, new_size=52):
    """(NewOverlay inputs): the extended taxonomy, its class list, a new-class bank and a 52 x 52 replay bank of
    Normal / Center / Scratch / Center+Scratch maps with their die grids."""
    from domainvlm.domains.wafer.expert_data import MapBank, class_names
    from domainvlm.domains.wafer.sources import WaferSet
    from domainvlm.domains.wafer.synth import synth_map
    from domainvlm.domains.wafer.taxonomy import default
    from domainvlm.taxonomy import extend

    (tmp_path / "t.yaml").write_text(YAML, encoding="utf-8")
    tax = extend(default(), str(tmp_path / "t.yaml"))
    classes = class_names(tax)
    rng = np.random.default_rng(0)
    replay_sets = [(), ("Center",), ("Scratch",), ("Center", "Scratch")] * 4
    replay = WaferSet([synth_map(d, 52, rng) for d in replay_sets], replay_sets, None, "mixedwm38", "mixedwm38", "r")
    new = WaferSet([synth_map(d, new_size, rng) for d in new_sets], new_sets, None, "custom", "custom", "n")
    mix = MapBank(replay, 224, "cpu", "mixedwm38", classes, tax)
    return tax, classes, MapBank(new, 224, "cpu", "new", classes, tax), mix, replay.maps


def test_overlays_are_labelled_with_the_union_and_stay_on_the_wafer(tmp_path):
    from domainvlm.domains.wafer.expert_overlay import NewOverlay

    new_sets = [("Reticle-Repeat",), ("Notch-Cluster",), ("Center", "Reticle-Repeat")] * 3
    tax, classes, new, mix, maps = _banks(tmp_path, new_sets)
    ov = NewOverlay(new, mix, maps, classes, tax)
    # B: only maps showing new classes alone; A: Normal or one known pattern whose union is an answer
    names = {(classes[a], classes[b], classes[t]) for a, b, t in ov.triples.tolist()}
    assert names == {("Normal", "Reticle-Repeat", "Reticle-Repeat"), ("Normal", "Notch-Cluster", "Notch-Cluster"),
                     ("Center", "Reticle-Repeat", "Center+Reticle-Repeat"),
                     ("Center", "Notch-Cluster", "Center+Notch-Cluster")}
    canvas, cls = ov.sample(400, torch.Generator().manual_seed(0))
    got = [classes[k] for k in cls.tolist()]
    alone = sum(g in ("Reticle-Repeat", "Notch-Cluster") for g in got) / len(got)
    assert 0.4 < alone < 0.6  # half on a Normal map, half beside a known pattern
    wafer = mix.canvas[0] > 0  # every replay map here has the same outline
    assert ((canvas > 0) == wafer).all()  # the overlay keeps A's wafer: nothing lands off it
    assert set(torch.unique(canvas).tolist()) <= {0, 1, 2}
    assert (canvas == 2).flatten(1).sum(1).min() > 0


def test_bound_maps_are_mirrored_only_and_never_shifted(tmp_path):
    """Notch-Cluster overlays keep the notch tongue at the bottom: its fail dies stay in the lower part of the
    map whatever the draw, while Reticle-Repeat maps are turned and shifted."""
    from domainvlm.domains.wafer.expert_extend import bound_rows
    from domainvlm.domains.wafer.expert_overlay import NewOverlay

    new_sets = [("Notch-Cluster",)] * 4 + [("Reticle-Repeat",)] * 4
    tax, classes, new, mix, maps = _banks(tmp_path, new_sets)
    ov = NewOverlay(new, mix, maps, classes, tax, "dihedral", bound_rows(new, ["Notch-Cluster"]))
    ov.weight = torch.tensor([1.0 if classes[t] == "Notch-Cluster" else 0.0 for _, _, t in ov.triples.tolist()])
    canvas, _ = ov.sample(64, torch.Generator().manual_seed(1))
    b_only = (canvas == 2) & ~(ov.background[0] == 2)  # the Normal A's pattern is empty: B's dies (with noise)
    rows = torch.arange(224)[None, :, None].float()
    centre_row = (b_only * rows).flatten(1).sum(1) / b_only.flatten(1).sum(1)
    assert (centre_row > 130).all(), centre_row  # the tongue (dense) pulls the mean fail row downwards
    ov.bound = torch.zeros_like(ov.bound)  # the same maps treated as free: turned, so the tongue goes elsewhere
    canvas, _ = ov.sample(64, torch.Generator().manual_seed(1))
    b_only = (canvas == 2)
    centre_row = (b_only * rows).flatten(1).sum(1) / b_only.flatten(1).sum(1)
    assert (centre_row < 100).any()


def test_shift_fills_with_off_wafer():
    from domainvlm.domains.wafer.expert_overlay import shift_batch

    x = torch.arange(1, 17, dtype=torch.uint8).view(1, 4, 4).repeat(2, 1, 1)
    y = shift_batch(x, torch.tensor([1, 0]), torch.tensor([0, -2]))
    assert torch.equal(y[0, 1:], x[0, :3]) and (y[0, 0] == 0).all()
    assert torch.equal(y[1, :, :2], x[1, :, 2:]) and (y[1, :, 2:] == 0).all()


def test_no_eligible_new_map_is_one_clear_error(tmp_path):
    from domainvlm.domains.wafer.expert_overlay import NewOverlay
    from domainvlm.errors import UserError

    tax, classes, new, mix, maps = _banks(tmp_path, [("Reticle-Repeat",)] * 3, new_size=40)
    with pytest.raises(UserError, match="new_overlay_frac: new_data has no map of MixedWM38's die grid"):
        NewOverlay(new, mix, maps, classes, tax)


@pytest.mark.slow
def test_continue_with_overlays(tmp_path):
    """train-expert with new_overlay_frac on the tiny continuation: runs, and the log says the overlays are on."""
    import json

    from test_fab_continue import continue_tiny

    out = continue_tiny(tmp_path, "max_steps=4", "ema_decay=0", "eval_at=[1.0]", "new_overlay_frac=0.5")
    cfg = json.loads(next(line for line in (out / "train_log.txt").read_text().splitlines()
                          if line.startswith("# config "))[len("# config "):])
    assert cfg["new_overlay_frac"] == 0.5 and (out / "model" / "model.safetensors").is_file()
