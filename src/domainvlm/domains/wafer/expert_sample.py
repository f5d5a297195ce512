"""One training batch of the wafer recipe, for the expert and for its CNN teacher alike (expert_teacher.py).

MixedWM38 maps drawn uniformly, WM-811K maps class-balanced (weight n_class^-wm811k_balance), optionally new
superposed MixedWM38 mixtures and a fab's new classes (some laid over real maps: expert_overlay.py), every map
under a random die-grid symmetry; optionally the replay maps get fresh die noise and a shift of a few pixels
(map_jitter.py). The random draws happen in one fixed order, so the expert's batches depend only
on its generator.
"""

from __future__ import annotations

import torch

from .expert_data import augment_batch
from .map_jitter import die_noise_batch, random_shift


class BatchDraw:
    def __init__(self, cfg, mix, wm, sup=None, new_train=None, overlay=None):
        self.cfg, self.mix, self.wm, self.sup, self.new, self.overlay = cfg, mix, wm, sup, new_train, overlay
        self.w_wm = wm.class_weights(cfg.wm811k_balance)
        self.bound = None  # rows of new_train naming an orientation-bound class: mirrored only
        if new_train is not None and cfg.new_augment_bound:
            from .expert_extend import bound_rows

            self.bound = bound_rows(new_train, cfg.new_augment_bound)

    def __call__(self, b: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(canvas (b, S, S), class index (b,)) of ``b`` augmented training maps."""
        cfg, mix, wm, dev = self.cfg, self.mix, self.wm, self.w_wm.device
        n_new = round(b * cfg.new_frac) if self.new is not None else 0
        b_old = b - n_new  # replay: the recipe's own mix of MixedWM38 / WM-811K / superposed maps
        n_sup = round(b_old * cfg.mixed_frac * cfg.superpose_frac) if self.sup is not None else 0
        n_mix = round(b_old * cfg.mixed_frac) - n_sup
        i_mix = torch.randint(0, len(mix), (n_mix,), device=dev, generator=gen)
        i_wm = torch.multinomial(self.w_wm, b_old - n_mix - n_sup, replacement=True, generator=gen)
        canvas = torch.cat([mix.canvas[i_mix], wm.canvas[i_wm]])
        cls = torch.cat([mix.cls[i_mix], wm.cls[i_wm]])
        geo = torch.cat([mix.geometry[i_mix], wm.geometry[i_wm]])
        if cfg.die_noise > 0:  # each random draw only when asked: batches stay as before for the same generator
            canvas = die_noise_batch(canvas, geo, cfg.die_noise, gen)
        if cfg.dihedral:
            canvas = augment_batch(canvas, geo, cfg.rotate_frac, gen)
        if cfg.shift_px > 0:
            canvas = random_shift(canvas, geo, cfg.shift_px, gen)
        if self.sup is not None:
            c_sup, k_sup = self.sup.sample(n_sup, gen, cfg.dihedral)
            canvas, cls = torch.cat([canvas, c_sup]), torch.cat([cls, k_sup])
        if n_new:
            from .expert_extend import sample_new

            n_ov = round(n_new * cfg.new_overlay_frac) if self.overlay is not None else 0
            c_new, k_new = sample_new(self.new, n_new - n_ov, cfg.new_augment, gen, self.bound)
            canvas, cls = torch.cat([canvas, c_new]), torch.cat([cls, k_new])
            if n_ov:  # drawn last: without overlays the batches stay as before for the same generator
                c_ov, k_ov = self.overlay.sample(n_ov, gen)
                canvas, cls = torch.cat([canvas, c_ov]), torch.cat([cls, k_ov])
        return canvas, cls
