"""A small CNN teacher, trained inside the classify recipe and used only to teach the expert.

ViTs learn little from a thousand images; a convolutional network does. The recipe trains this ResNet-style
network first on the same augmented batches, then distils its class probabilities on every augmented
training image into the expert ("consistent teaching": teacher and student see the same view). The
teacher is never saved with the model: the shipped folder stays one Hugging Face Qwen2-VL.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)))


class TeacherCNN(nn.Module):
    """ResNet-18-like (two blocks per stage), for (B, H, W, 3) uint8 images."""

    def __init__(self, n_classes: int, width: int = 32):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 5, 2, 2, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        layers, cin = [], w
        for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
            layers += [_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x = self.body(self.stem(x.contiguous(memory_format=torch.channels_last)))
        return self.fc(x.mean(dim=(2, 3)))


def train_teacher(bank, n_classes: int, steps: int, batch_size: int, lr: float, augment, gen, log=print):
    """Train on ``bank`` (recipe_data.ImageBank) for ``steps``; returns the network in eval mode."""
    dev = bank.images.device
    net = TeacherCNN(n_classes).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    net.train()
    for step in range(1, steps + 1):
        i = torch.randint(0, len(bank), (batch_size,), device=dev, generator=gen)
        with amp:
            loss = F.cross_entropy(net(augment(bank.images[i])), bank.cls[i], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, steps // 10) == 0:
            log(f'{{"teacher_step": {step}, "loss": {loss.item():.4f}}}')
    return net.eval()


@torch.no_grad()
def accuracy(net, bank, batch_size: int = 256) -> float:
    dev = bank.images.device
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    hits = 0
    for s in range(0, len(bank), batch_size):
        with amp:
            pred = net(bank.images[s:s + batch_size]).argmax(-1)
        hits += int((pred == bank.cls[s:s + batch_size]).sum())
    return hits / max(1, len(bank))
