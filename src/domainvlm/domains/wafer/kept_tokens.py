"""The vision tokens of the maps the wafer head just answered, kept for their evidence.

The evidence (evidence_tokens.py, at the default split after the tower's last block) starts from the same
tokens the answer's vision forward made: before the patch merger, the tower output of the map. With evidence
in use (an :class:`.evidence.Attributor` exists for the head), the head's prefill keeps, for batches of at
most ``KEEP`` maps, each map's pixel values and its tokens; the attributor looks a map up by its pixel values
(exact equality: the same pixels give the same tokens), so the evidence of a map just answered runs no vision
forward of its own. Batches larger than ``KEEP`` (eval, throughput, the GPU) keep nothing: nothing is copied
where no evidence follows one map at a time.
"""

from __future__ import annotations

import torch

KEEP = 16  # maps kept (the most recent); also the largest batch whose maps are kept


class KeptTokens:
    def __init__(self, keep: int = KEEP):
        self.keep = keep
        self.items: list[tuple[torch.Tensor, torch.Tensor]] = []  # (pixel values, tokens) per map, newest last
        self.hits = 0  # lookups answered from the kept tokens

    def put(self, pixel_values: torch.Tensor, tokens: torch.Tensor, per_image: int) -> None:
        """Keep each map of a batch: ``pixel_values`` (B * per_image, patch) as the prefill got them, ``tokens``
        (B * per_image, dim) the tower's output for them."""
        b = pixel_values.shape[0] // per_image
        if b > self.keep or tokens.shape[0] != pixel_values.shape[0]:
            return
        for j in range(b):
            rows = slice(j * per_image, (j + 1) * per_image)
            # copies only for a batch (a view would hold the whole batch's tensors)
            pv, tk = pixel_values[rows], tokens[rows]
            self.items.append((pv, tk) if b == 1 else (pv.clone(), tk.clone()))
        del self.items[:-self.keep]

    def get(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """The kept tokens of the map with exactly these pixel values (newest first), or None."""
        for pv, tk in reversed(self.items):
            same = pv.shape == pixel_values.shape and (pv.dtype, pv.device) == (pixel_values.dtype, pixel_values.device)
            if same and torch.equal(pv, pixel_values):
                self.hits += 1
                return tk
        return None
