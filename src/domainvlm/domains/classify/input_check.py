"""Out-of-domain check of a classify model: is this image of the kind the model was trained on?

Data-driven from the training images, for any labelled collection: each image (grey levels at the model's input
size) becomes 56 statistics - colourfulness, the intensity histogram, the gradient-magnitude histogram, the
radial power spectrum, local contrast, grey-level count, and how the mean and contrast vary over 2x2 / 4x4 /
8x8 blocks (stationary texture versus a scene with layout). The training images give one mean per class and a
shared covariance (a class-conditional Gaussian with tied covariance, standardised features); an image's score
is its smallest Mahalanobis distance to a class mean, per feature. The threshold is set on the in-domain val
images: at most ``max_reject`` (default 2%) of them score above it.

The model's own pooled vision features were tried first and did not separate: on the NEU steel expert a wafer
map or a radiograph lands as close to the steel classes as steel val photos (docs/benchmarks.md).

Stored beside the weights as ``input_check.safetensors`` (tensors; threshold and provenance as text metadata;
never pickle). A folder without it is not checked. Fitted by ``domainvlm calibrate --input-check TRAIN_DATA``
(:func:`fit_records`) and at the end of the training recipe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FILE = "input_check.safetensors"
MAX_REJECT = 0.02  # share of in-domain val images the threshold may turn away
MIN_TRAIN = 8  # training images needed to fit a check
SHRINK = 1e-3  # covariance shrinkage towards its mean variance (a few statistics are nearly constant)
_BANDS = np.geomspace(0.005, 0.5, 9)


def image_stats(img, size: int = 224) -> np.ndarray:
    """The 56 statistics of one image drawn at ``size`` x ``size``."""
    a = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255.0
    g = a.mean(-1)
    spread = a.max(-1) - a.min(-1)
    f = [spread.mean(), np.quantile(spread, 0.95), g.mean(), g.std()]
    f += list(np.histogram(g, 16, (0, 1))[0] / g.size)
    m = np.concatenate([np.abs(np.diff(g, axis=1)).ravel(), np.abs(np.diff(g, axis=0)).ravel()])
    f += [m.mean(), m.std(), *(np.histogram(np.log10(m + 1e-4), 12, (-4, 0))[0] / m.size)]
    p = np.abs(np.fft.rfft2(g - g.mean())) ** 2
    r = np.hypot(np.fft.rfftfreq(size)[None], np.fft.fftfreq(size)[:, None])
    bands = np.array([p[(r >= lo) & (r < hi)].sum() for lo, hi in zip(_BANDS[:-1], _BANDS[1:])])
    f += list(np.log10(bands / (bands.sum() + 1e-12) + 1e-8))
    s8 = size // 8 * 8
    b = g[:s8, :s8].reshape(size // 8, 8, size // 8, 8).std(axis=(1, 3))
    f += [b.mean(), b.std(), (b < 0.01).mean(), len(np.unique((g * 255).round())) / 256]
    for n in (2, 4, 8):  # layout: a texture is about the same everywhere, a scene is not
        s = size // n * n
        blk = g[:s, :s].reshape(n, s // n, n, s // n)
        bm, bs = blk.mean(axis=(1, 3)), blk.std(axis=(1, 3))
        f += [bm.std(), bm.max() - bm.min(), bs.std() / (bs.mean() + 1e-3)]
    f.append(g[size // 4: 3 * size // 4, size // 4: 3 * size // 4].mean() - g.mean())
    return np.asarray(f, np.float64)


@dataclass
class InputCheck:
    center: torch.Tensor  # (d,) standardisation: training mean
    scale: torch.Tensor  # (d,) and spread of each statistic
    means: torch.Tensor  # (c, d) standardised class means
    precision: torch.Tensor  # (d, d) inverse of the shared within-class covariance
    threshold: float  # score above it: out of domain
    size: int = 224  # images are drawn at this size before the statistics
    info: dict = field(default_factory=dict)

    def features(self, images) -> torch.Tensor:
        return (stats(images, self.size) - self.center) / self.scale

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """Smallest Mahalanobis distance (squared, per statistic) of standardised features to a class mean."""
        d = z[:, None, :] - self.means[None]
        return (torch.einsum("ncd,de,nce->nc", d, self.precision, d).min(-1).values / z.shape[1]).float()

    def outside(self, images) -> list[bool]:
        return (self.scores(self.features(images)) > self.threshold).tolist() if images else []


def stats(images, size: int = 224) -> torch.Tensor:
    """(n, 56) statistics of images (an iterable: each image is read, measured and let go)."""
    rows = [image_stats(im, size) for im in images]
    return torch.tensor(np.stack(rows), dtype=torch.float64) if rows else torch.empty(0, 56, dtype=torch.float64)


def fit(train: torch.Tensor, train_keys, val: torch.Tensor, size: int = 224, max_reject: float = MAX_REJECT,
        info: dict | None = None) -> InputCheck:
    """From :func:`stats` of the training images (``train_keys``: each one's label set) and of the val
    images: class means and tied covariance; the threshold leaves at most ``max_reject`` of val above it."""
    from ...errors import UserError

    if len(train) < MIN_TRAIN or not len(val):
        raise UserError(f"input check: needs at least {MIN_TRAIN} training and 1 val image "
                        f"(got {len(train)}, {len(val)})")
    center, sd = train.mean(0), train.std(0)
    scale = sd + 1e-2 * sd.mean()  # a constant statistic must not make every other value infinitely far
    z = (train - center) / scale
    keys = sorted(set(train_keys))
    idx = torch.tensor([keys.index(k) for k in train_keys])
    means = torch.stack([z[idx == i].mean(0) for i in range(len(keys))])
    c = z - means[idx]
    cov = c.T @ c / len(c)
    cov = (1 - SHRINK) * cov + SHRINK * torch.eye(len(cov), dtype=cov.dtype) * cov.diagonal().mean()
    chk = InputCheck(center, scale, means, torch.linalg.inv(cov), float("inf"), size)
    v = chk.scores((val - center) / scale).double().sort(descending=True).values
    k = int(max_reject * len(v))  # the k highest val scores may lie above the threshold, no more
    chk.threshold = float(v[k]) if k < len(v) else float(v[-1])
    chk.info = {**(info or {}), "n_train": len(train), "n_val": len(val), "classes": len(keys), "size": size,
                "max_reject": max_reject, "val_rejected": float((v > chk.threshold).double().mean())}
    return chk


def fit_records(train_records, val_records, size: int = 224, max_reject: float = MAX_REJECT, base=None,
                val_base=None, info: dict | None = None) -> InputCheck:
    """:func:`fit` from labelled records (the first image of each; relative paths under ``base`` /
    ``val_base``); the label set is each record's ``labels['labels']``."""
    from ...data.images import load_image

    def images(recs, root):
        for r in recs:
            yield load_image(r.images[0], root)

    keys = ["+".join(sorted(r.labels.get("labels") or ())) for r in train_records]
    return fit(stats(images(train_records, base), size), keys, stats(images(val_records, val_base or base), size),
               size, max_reject, info)


def save(folder, chk: InputCheck) -> Path:
    from safetensors.torch import save_file

    from ...io import atomic_path

    path = Path(folder) / FILE
    meta = {"threshold": repr(chk.threshold), "size": str(chk.size), "info": json.dumps(chk.info)}
    tensors = {"center": chk.center, "scale": chk.scale, "means": chk.means, "precision": chk.precision}
    with atomic_path(path, ".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    return path


def load(folder) -> InputCheck | None:
    """The model folder's input check, or None (not checked) when it has none."""
    from safetensors import SafetensorError, safe_open

    from ...errors import UserError

    path = Path(folder) / FILE if folder else None
    if path is None or not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k).double() for k in ("center", "scale", "means", "precision")}
        return InputCheck(t["center"], t["scale"], t["means"], t["precision"], float(meta["threshold"]),
                          int(meta.get("size", 224)), json.loads(meta.get("info", "{}")))
    except (KeyError, ValueError, OSError, SafetensorError) as e:
        raise UserError(f"{path}: not a valid input check ({e.__class__.__name__}: {e})") from None


def no_image_message(taxonomy, lang: str) -> str:
    """The answer in the question's language to a question that needs an image but came without one."""
    if lang == "zh":
        names = "、".join(c.zh or c.name for c in taxonomy.classes)
        return f"判断类别需要一张图像，但这个问题没有附带图像。请附上图像（{taxonomy.name}：{names}）后再问。"
    names = ", ".join(c.name for c in taxonomy.classes)
    return (f"I need an image to answer that, and this question came without one. Please attach the image "
            f"({taxonomy.name}: {names}) and ask again.")


def help_message(taxonomy, lang: str) -> str:
    """What a classify expert answers, for a text-only turn it has no answer to (head.ClassifyHead.answer);
    it offers to describe a class only where the taxonomy has a description to give."""
    described = next((c for c in taxonomy.classes if c.describe(lang)), None)
    if lang == "zh":
        names = "、".join(c.zh or c.name for c in taxonomy.classes)
        more = f"没有图像时，我可以介绍某个类别，例如“什么是{described.zh or described.name}？”。" if described else ""
        return f"我把一张图像分为以下类别之一（{taxonomy.name}）：{names}。请附上图像再提问，例如“这是哪一类？”。{more}"
    names = ", ".join(c.name for c in taxonomy.classes)
    more = f' Without an image I can describe a class, e.g. "What is {described.name}?".' if described else ""
    return (f"I classify one image as one of ({taxonomy.name}): {names}. Attach an image and ask, for example, "
            f'"What class is this?".{more}')


def follow_up_note(lang: str) -> str:
    """The line before the class answer to a later turn about the same image (head.ClassifyHead._follow_ups)."""
    return ("我只能判断图像属于哪一类；这张图像：" if lang == "zh" else
            "I can only say which class an image shows. For this image:")


def message(taxonomy, lang: str) -> str:
    """The answer in the question's language when an image is turned away."""
    if lang == "zh":
        names = "、".join(c.zh or c.name for c in taxonomy.classes)
        return (f"这张图像看起来不像本模型训练时见过的图像（{taxonomy.name}：{names}），因此不做判断。"
                "请提供同类图像。")
    names = ", ".join(c.name for c in taxonomy.classes)
    return (f"This image does not look like the images this model was trained on ({taxonomy.name}: {names}), "
            "so I give no answer. Please send an image of that kind.")
