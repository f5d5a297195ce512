"""New-class maps laid over real replay maps: more contexts for a fab's few labelled maps (``new_overlay_frac``).

A fab gives ~200 labelled maps per new class; the taxonomy-extension recipe draws each of them hundreds of times
(expert_extend.sample_new), and the model learns those maps rather than the pattern: on held-back maps its
Reticle-Repeat recall is lowest where the grid is mixed with another pattern. Here the fail dies of a new-class
map B that shows new classes only are laid over a real MixedWM38 train map A of the same die grid, labelled
A | B where that union is an answer of the taxonomy: B's pattern beside real known patterns and on real wafer
outlines, with B turned (any symmetry, or the left-right mirror for orientation-bound classes) and shifted by a
few dies independently of A. Half of the overlays land on a Normal A (the new pattern alone), half on an A with
one known pattern (the taxonomy's mixtures).

A contributes its pattern only (expert_data.pattern_only): MixedWM38's background fails (often 10 % of the dies)
would hide a sparse reticle grid, and a label naming a pattern nobody can see teaches the model to name it on
noisy maps. B keeps all its fail dies (its own, lighter noise too): pattern_only would drop a reticle grid,
whose dies fail one by one.
"""

from __future__ import annotations

import torch

from ...errors import UserError
from .map_jitter import shift_batch


class NewOverlay:
    def __init__(self, new, mix, mix_maps, classes: list[str], tax, augment: str = "dihedral",
                 bound: torch.Tensor | None = None, shift: int = 3):
        """``mix_maps``: the die grids of ``mix`` (MapBank of the MixedWM38 train maps). ``augment`` as
        new_augment: dihedral (B turned and shifted, except the ``bound`` rows of ``new``: mirrored only), mirror
        (every B mirrored only, never shifted), none (B as drawn)."""
        from .expert_data import class_rows, pattern_canvas
        from .patterns import set_key

        dev = new.cls.device
        if len(mix) == 0 or not torch.equal(mix.geometry.min(0).values, mix.geometry.max(0).values):
            raise UserError("new_overlay_frac: the MixedWM38 train maps must share one die grid (52 x 52)")
        same_grid = (new.geometry == mix.geometry[0]).all(1)
        known = {n for d in mix.defects for n in d}  # the replay's patterns: B must show none of them
        only_new = torch.tensor([bool(d) and not (set(d) & known) for d in new.defects], device=dev)
        rows_b = (same_grid & only_new).nonzero().flatten()
        a_sets = {int(c): mix.defects[i] for i, c in enumerate(mix.cls.tolist())}
        b_sets = {int(new.cls[i]): new.defects[i] for i in rows_b.tolist()}
        triples = []  # (class of A, class of B, class of the overlay)
        for b, db in b_sets.items():
            for a, da in a_sets.items():
                if len(da) <= 1 and not set(da) & set(db):
                    key = set_key(tuple(da) + tuple(db), tax)
                    if key in classes:
                        triples.append((a, b, classes.index(key), len(da) == 0))
        if not any(t[3] for t in triples):
            raise UserError("new_overlay_frac: new_data has no map of MixedWM38's die grid (52 x 52) that shows "
                            "new classes only, so there is nothing to lay over the replay maps")
        alone = torch.tensor([t[3] for t in triples], device=dev)
        # half the overlays on a Normal map, half on one known pattern; uniform over targets within each half
        self.weight = 1.0 / _group_targets(torch.tensor([t[2] for t in triples], device=dev), alone)
        self.triples = torch.tensor([t[:3] for t in triples], device=dev)
        self.new, self.mix, self.shift = new, mix, shift
        self.background = pattern_canvas(mix_maps, mix.size, dev)
        self.augment = augment
        self.bound = bound if bound is not None else torch.zeros(len(new), dtype=torch.bool, device=dev)
        self.rows = {"a": class_rows(mix.cls), "b": class_rows(new.cls, rows_b)}

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(canvas (n, S, S), class index (n,)) of ``n`` overlays."""
        from .expert_data import dihedral_batch, pick_of_class

        dev = self.new.cls.device
        tr = self.triples[torch.multinomial(self.weight, n, replacement=True, generator=gen)]
        ia, ib = pick_of_class(self.rows["a"], tr[:, 0], gen), pick_of_class(self.rows["b"], tr[:, 1], gen)
        a = dihedral_batch(self.background[ia], torch.randint(0, 8, (n,), device=dev, generator=gen))
        k = torch.randint(0, 8, (n,), device=dev, generator=gen)
        free = ~self.bound[ib] if self.augment == "dihedral" else torch.zeros(n, dtype=torch.bool, device=dev)
        k = torch.where(free, k, 4 * (k % 2))  # not free: identity or the left-right mirror (k = 4)
        if self.augment == "none":
            k = torch.zeros_like(k)
        b = dihedral_batch(self.new.canvas[ib], k)
        px = self.mix.geometry[0, 2].long()  # die pixels on the canvas
        d = torch.randint(-self.shift, self.shift + 1, (2, n), device=dev, generator=gen) * px * free
        b = shift_batch(b, d[0], d[1])
        return torch.where((a > 0) & (b == 2), b, a), tr[:, 2]


def _group_targets(targets: torch.Tensor, alone: torch.Tensor) -> torch.Tensor:
    """Per triple: (distinct targets in its half) x (triples sharing its target); 1 / this gives each half
    the same total weight (multinomial normalises) and each target within a half the same share."""
    per_target = torch.bincount(targets)[targets].float()
    n_alone = len(set(targets[alone].tolist()))
    n_mixed = len(set(targets[~alone].tolist()))
    return per_target * torch.where(alone, float(max(1, n_alone)), float(max(1, n_mixed)))
