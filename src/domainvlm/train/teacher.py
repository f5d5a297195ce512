"""A small ResNet-style CNN teacher that recipes train in-run and distil into an expert (never shipped with it).

ViTs learn little from few images and a CNN is a strong classifier of small images, so a recipe trains this
network on its own augmented batches and distils its class probabilities on each training view into the
expert. Generic: a recipe passes a ``prep`` that turns its batch (uint8 RGB images, palette canvases, ...)
into a float NCHW tensor, and a ``sample()`` that draws one augmented training batch. Saved, if at all, as
its own safetensors file beside a run (:func:`save_teacher` / :func:`load_teacher`), never in a model folder.
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError

KIND = "domainvlm-teacher-cnn"


def rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 images -> (B, 3, H, W) floats in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


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
    """ResNet-18-like (two blocks per stage, widths w, 2w, 4w, 8w; total stride 16); ``prep`` maps the recipe's
    batch to float NCHW with ``in_channels`` channels (default: (B, H, W, 3) uint8 RGB)."""

    def __init__(self, n_classes: int, width: int = 32, in_channels: int = 3, prep=None):
        super().__init__()
        self.n_classes, self.width, self.in_channels = n_classes, width, in_channels
        self.prep = prep or rgb_uint8
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 5, 2, 2, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        layers, cin = [], w
        for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
            layers += [_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, n_classes)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.prep(batch)
        x = self.body(self.stem(x.contiguous(memory_format=torch.channels_last)))
        return self.fc(x.mean(dim=(2, 3)))


def _amp(dev: torch.device):
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")


def train_teacher(net: TeacherCNN, sample, steps: int, lr: float, log=print) -> TeacherCNN:
    """``steps`` of SGD (Nesterov, one-cycle schedule, label smoothing 0.1) on batches ``sample() -> (batch,
    class index)``, bf16 autocast on CUDA; returns the network in eval mode."""
    dev = next(net.parameters()).device
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    amp, t0 = _amp(dev), time.time()
    net.train()
    # On the CPU the loop runs without oneDNN: its 1x1-convolution weight gradient (jit_avx2, channels-last) hung
    # in an OpenMP barrier once and aborted the process once on the 2-vCPU AMD EPYC dev VM (torch 2.13.0+cpu),
    # in two of three full test runs. ATen's own kernels are slower but do not. CUDA is unaffected.
    with torch.backends.mkldnn.flags(enabled=dev.type != "cpu"):
        _steps(net, sample, steps, opt, sched, amp, t0, log)
    return net.eval()


def _steps(net, sample, steps: int, opt, sched, amp, t0: float, log) -> None:
    for step in range(1, steps + 1):
        with amp:  # sampling too: a recipe's augmentation runs as it did when it was part of this loop
            x, y = sample()
            loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, steps // 10) == 0:
            log(f'{{"teacher_step": {step}, "loss": {loss.item():.4f}, "s": {time.time() - t0:.1f}}}')


@torch.no_grad()
def teacher_logits(net: TeacherCNN, batch: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """float32 logits of ``batch``, ``chunk`` rows per forward (eval mode is the caller's)."""
    amp = _amp(batch.device)
    outs = []
    for s in range(0, len(batch), chunk):
        with amp:
            outs.append(net(batch[s:s + chunk]).float())
    return torch.cat(outs) if outs else torch.zeros(0, net.n_classes, device=batch.device)


def accuracy(net: TeacherCNN, batch: torch.Tensor, cls: torch.Tensor, chunk: int = 256) -> float:
    return int((teacher_logits(net, batch, chunk).argmax(-1) == cls).sum()) / max(1, len(cls))


def save_teacher(net: TeacherCNN, path, meta: dict | None = None) -> None:
    """The weights (BatchNorm statistics included) and the shape as safetensors, written atomically; ``meta``:
    the recipe's own facts (class names, input format) that :func:`load_teacher` hands back."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    info = {"kind": KIND, "n_classes": net.n_classes, "width": net.width, "in_channels": net.in_channels,
            "meta": meta or {}}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"domainvlm": json.dumps(info)})


def _read(path, tensors: bool) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            info = json.loads((fh.metadata() or {}).get("domainvlm", "{}"))
            state = {k: fh.get_tensor(k) for k in fh.keys()} if tensors else {}
    except (OSError, SafetensorError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors teacher ({e})") from None
    if not isinstance(info, dict) or info.get("kind") != KIND:
        raise UserError(f"{path}: not a domainvlm teacher CNN (no '{KIND}' metadata)")
    return info, state


def teacher_meta(path) -> dict:
    """The ``meta`` a teacher file was saved with, without reading its weights (UserError if it is none)."""
    return _read(path, False)[0].get("meta", {})


def load_teacher(path, device, prep=None) -> tuple[TeacherCNN, dict]:
    """(network in eval mode on ``device``, the ``meta`` it was saved with); UserError naming the file if it is
    not a teacher saved by :func:`save_teacher`."""
    info, state = _read(path, True)
    net = TeacherCNN(info["n_classes"], info["width"], info["in_channels"], prep)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: teacher weights do not fit its recorded shape ({str(e).splitlines()[0]})") from None
    net = net.to(device).to(memory_format=torch.channels_last).eval()
    return net, info.get("meta", {})
