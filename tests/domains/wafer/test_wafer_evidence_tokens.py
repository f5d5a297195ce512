"""Token-level evidence (evidence_tokens.py): the token -> die mapping, the shared-prefix LM target, the
baseline cache and the pixel path, on the bundled expert (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domainvlm.domains.wafer.dies import read_dies
from domainvlm.domains.wafer.evidence_tokens import line_targets, to_dies, token_cells
from domainvlm.domains.wafer.render import render_map
from domainvlm.domains.wafer.synth import synth_map_with_masks
from domainvlm.models.qwen_fast import embed_with_images, mrope_positions, patchify


def test_token_cells_follow_patchify_order():
    s, p, m = 8, 4, 2
    img = np.zeros((1, s * p, s * p, 3), np.uint8)
    for r in range(s):
        for c in range(s):
            img[0, r * p:(r + 1) * p, c * p:(c + 1) * p, 0] = r * s + c  # each patch holds its own index
    pv = patchify(torch.from_numpy(img), patch=p, merge=m, temporal=1, mean=[0, 0, 0], std=[1, 1, 1], scale=1.0)
    rows, cols = token_cells(s, m)
    assert pv[:, 0].long().tolist() == (rows * s + cols).tolist()


def test_to_dies_shares_a_token_score_over_its_failing_dies_only():
    grid = np.ones((8, 8), np.uint8)
    grid[0, 0] = grid[0, 1] = grid[5, 5] = 2  # two failing dies in the first patch, one in another
    img = render_map(grid, size=32)  # 4 px per die: a 16-px patch is 4 x 4 dies
    dies = read_dies(img)
    fail_px = np.kron(grid == 2, np.ones((4, 4))) > 0
    scores = np.zeros((1, 4))
    scores[0, 0], scores[0, 3] = 6.0, -2.0  # token 0 = top-left patch; token 3 = the bottom-right patch
    out = to_dies(scores, fail_px, dies, patch=16, merge=2)[0]
    assert out[0, 0] == pytest.approx(3.0) and out[0, 1] == pytest.approx(3.0)
    assert out[5, 5] == pytest.approx(-2.0)
    assert np.count_nonzero(out) == 3 and out.sum() == pytest.approx(4.0)


@pytest.fixture(scope="module")
def head():
    from domainvlm.inference.engine import Engine

    return Engine(device="cpu", threads=2).answer_head


def _full_rows(head, prompt, lines, img):
    """log p(line) of each line as full padded rows (the reference the cached-tail path must equal)."""
    model = head.model
    L = max(map(len, lines))
    ids = torch.tensor([prompt + ln + [head.pad_id] * (L - len(ln)) for ln in lines])
    s = head.size // head.ip["patch"]
    pos, _ = mrope_positions(ids, head.image_token_id, torch.tensor([[1, s, s]] * len(ids)), head.ip["merge"])
    emb = embed_with_images(model, ids, img.repeat(len(lines), 1))
    logp = torch.log_softmax(model(inputs_embeds=emb, position_ids=pos, use_cache=False).logits.float(), -1)
    lp = logp[:, len(prompt) - 1:-1].gather(-1, ids[:, len(prompt):, None])[..., 0]
    keep = torch.tensor([[j < len(ln) for j in range(L)] for ln in lines])
    return (lp * keep).sum(-1)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_cached_line_tails_give_the_full_row_log_probabilities(head, lang):
    from domainvlm.domains.wafer.evidence import Attributor

    att = Attributor(head)
    m, _ = synth_map_with_masks(("Center", "Scratch"), 52, np.random.default_rng(1))
    pv, g = head.pixel_values([render_map(m, size=head.size)])
    prompt, lines, w = att.targets(("Center", "Scratch"), lang)
    with torch.no_grad():
        img = att.vision(pv, tuple(g[0].tolist()))
        got = line_targets(head, prompt, lines, w, img, 1)
        ref = _full_rows(head, prompt, lines, img)
    assert torch.allclose(got, (ref[:2] - ref[2]).float(), atol=1e-4)


def test_token_evidence_is_the_same_with_the_cached_baseline_and_only_fails_score(head):
    from domainvlm.domains.wafer.evidence import Attributor

    att = Attributor(head)  # the default: tokens after block 4
    m, gt = synth_map_with_masks(("Edge-Loc",), 52, np.random.default_rng(7))
    img = render_map(m, size=head.size)
    _, first = att.raw_scores(img, ("Edge-Loc",))
    assert len(att.baselines) == 1
    _, again = att.raw_scores(img, ("Edge-Loc",))
    assert len(att.baselines) == 1  # the all-pass map's tokens came from the cache
    np.testing.assert_allclose(first["Edge-Loc"], again["Edge-Loc"], rtol=1e-4, atol=1e-6)
    assert not first["Edge-Loc"][m != 2].any() and first["Edge-Loc"][m == 2].any()
    ev, masks = att.evidence(img, ("Edge-Loc",))
    assert gt["Edge-Loc"][tuple(ev[0]["top_die"])]


def test_pixel_path_still_attributes(head):
    from domainvlm.domains.wafer.evidence import Attributor

    att = Attributor(head, steps=2, level=None)
    m, gt = synth_map_with_masks(("Loc",), 52, np.random.default_rng(3))
    ev, _ = att.evidence(render_map(m, size=head.size), ("Loc",))
    assert gt["Loc"][tuple(ev[0]["top_die"])]


def _bfs_clusters(fail):
    """Reference labelling: breadth-first over 8-neighbours, clusters numbered in row-major order."""
    h, w = fail.shape
    lab, n = np.zeros((h, w), int), 0
    for y, x in np.argwhere(fail):
        if lab[y, x]:
            continue
        n += 1
        lab[y, x], todo = n, [(y, x)]
        while todo:
            cy, cx = todo.pop()
            for ny in range(max(cy - 1, 0), min(cy + 2, h)):
                for nx in range(max(cx - 1, 0), min(cx + 2, w)):
                    if fail[ny, nx] and not lab[ny, nx]:
                        lab[ny, nx] = n
                        todo.append((ny, nx))
    return lab, n


def test_vectorised_clusters_equal_breadth_first_labelling():
    from domainvlm.domains.wafer.evidence import clusters

    rng = np.random.default_rng(0)
    cases = [synth_map_with_masks(tuple(d), 52, rng)[0] == 2 for d in
             (["Edge-Ring"], ["Scratch", "Center"], ["Random"], ["Donut", "Loc"], [])]
    cases += [rng.random((20, 31)) < q for q in (0.2, 0.45, 0.6)] + [np.zeros((5, 5), bool), np.ones((4, 6), bool)]
    for fail in cases:
        got, n = clusters(fail)
        ref, m = _bfs_clusters(fail)
        assert n == m and (got == ref).all()
