"""Auxiliary pattern-presence loss for the wafer expert recipe (``presence_loss`` > 0; training only).

Most wrong MixedWM38 answers drop one pattern of a 3- or 4-pattern mixture (model card). The text loss
teaches "is Scratch also there?" only through one token decision after the patterns before it. This head
reads the image tokens the language model receives (mean and max over the 49 merged tokens) and predicts
all 8 patterns at once, multi-label, so every pattern of every map sends its own gradient into the vision
tower. The head is not part of the saved model: the HF folder and its answers are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .patterns import PATTERNS


def pattern_targets(classes: list[str], device) -> torch.Tensor:
    """(len(classes), 8) multi-hot presence of each pattern in each class name ("Center+Scratch", "Normal")."""
    rows = [[float(p in name.split("+")) for p in PATTERNS] for name in classes]
    return torch.tensor(rows, device=device)


class PresenceHead(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(2 * hidden)
        self.out = nn.Linear(2 * hidden, len(PATTERNS))

    def forward(self, image_tokens: torch.Tensor, n_images: int) -> torch.Tensor:
        """(n_images * tokens, hidden) merged image embeddings -> (n_images, 8) presence logits."""
        x = image_tokens.view(n_images, -1, image_tokens.shape[-1]).float()
        return self.out(self.norm(torch.cat([x.mean(1), x.amax(1)], -1)))

    def loss(self, image_tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean binary cross-entropy over images and patterns."""
        return F.binary_cross_entropy_with_logits(self(image_tokens, len(targets)), targets)
