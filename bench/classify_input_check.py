"""Out-of-domain check of a classify model (domains/classify/input_check.py), end to end through its head.

Every image is asked "What defect is this?" (every 4th in Chinese: "这是什么缺陷？") through the Engine, as
`ask` and the API do; an answer is turned away when its Assessment says ``abstain: true, reason:
out_of_domain``. Prints a table: the non-steel sets (those the statistics were designed with, and held-out
ones looked at only after the design was fixed) and the model's own val split (in-domain false abstention;
with accuracy with and without the check, and whether any other answer changed).

    python bench/classify_input_check.py [--model models/neu-steel-expert] [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SITE = Path(np.__file__).resolve().parents[1]  # site-packages: a few real photos ship with installed packages


def generated(seed: int) -> list[Image.Image]:
    """Noise, blanks, gradients, smooth fields, posterised noise (35 images per seed)."""
    rng = np.random.default_rng(seed)
    out = [Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for s in (32, 64, 128, 224, 300)]
    out += [Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8)).convert("RGB") for _ in range(5)]
    out += [Image.new("RGB", (224, 224), tuple(int(v) for v in rng.integers(0, 256, 3))) for _ in range(4)]
    out.append(Image.new("RGB", (224, 224), (255, 255, 255)))
    x = np.linspace(0, 255, 224)
    for k in range(5):
        w = rng.uniform(0, 1)
        out.append(Image.fromarray(np.clip(np.add.outer(x * w, x * (1 - w)), 0, 255).astype(np.uint8)).convert("RGB"))
    for _ in range(10):  # blurred random fields ("photos" of smooth texture), posterised colour noise
        f = rng.normal(size=(28, 28))
        out.append(Image.fromarray(((f - f.min()) / np.ptp(f) * 255).astype(np.uint8)).resize((224, 224),
                                                                                              Image.BILINEAR).convert("RGB"))
    for _ in range(5):
        out.append(Image.fromarray((rng.integers(0, 6, (224, 224, 3)) * 51).astype(np.uint8)))
    return out[:35]


def wafer_renders(seed: int, n: int = 20) -> list[Image.Image]:
    from domainvlm.domains.wafer.render import render_map
    from domainvlm.domains.wafer.synth import synth_map

    rng = np.random.default_rng(seed)
    kinds = [(), ("Center",), ("Scratch",), ("Edge-Ring",), ("Donut",), ("Loc", "Edge-Loc"), ("Random",)]
    return [render_map(synth_map(kinds[i % len(kinds)], 52, rng)) for i in range(n)]


def sets(data: Path) -> list[tuple[str, str, list]]:
    from domainvlm.data.images import load_image

    xr = [Image.open(p).convert("RGB") for p in sorted((data / "iu-xray-samples" / "images").glob("*.png"))]
    photos = [SITE / "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
              *sorted((SITE / "gradio/media_assets/images").glob("*.jp*g")),
              *sorted((SITE / "networkx/drawing/tests/baseline").glob("test_display_*.png"))[:4]]
    dcm = SITE / "data_store/data/RG1_UNCR.dcm"
    real_maps = [load_image(f"{data}/mixedwm38/mixedwm38_trainval.npz#{i}") for i in range(0, 19000, 1900)]
    real_maps += [load_image(f"{data}/wm811k/wm811k_trainval.npz#{i}") for i in range(0, 49000, 4900)]
    return [("design", "IU X-rays (10)", xr), ("design", "synthetic wafer renders", wafer_renders(0)),
            ("design", "generated (seed 0)", generated(0)),
            ("held-out", "photos and plots in site-packages", [Image.open(p).convert("RGB") for p in photos]),
            ("held-out", "DICOM radiograph (pydicom-data)", [load_image(str(dcm))] if dcm.is_file() else []),
            ("held-out", "real wafer maps (MixedWM38, WM-811K)", real_maps),
            ("held-out", "synthetic wafer renders (seed 1)", wafer_renders(1)),
            ("held-out", "generated (seed 1)", generated(1))]


def ask(eng, images) -> list:
    qs = ["What defect is this?", "这是什么缺陷？"]  # the model card's questions
    convs = [([{"role": "user", "content": f"<image>\n{qs[i % 4 == 3]}"}], [im]) for i, im in enumerate(images)]
    out = []
    for s in range(0, len(convs), 32):
        out += eng.generate(convs[s:s + 32])
    return out


def main() -> None:
    import torch

    from domainvlm.domains.classify.input_check import FILE
    from domainvlm.domains.classify.instruct import parse_answer
    from domainvlm.inference.engine import Engine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "models" / "neu-steel-expert"))
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--val", default="neu-steel/val", help="in-domain val ImageFolder under --data-root")
    args = p.parse_args()
    torch.set_num_threads(2)
    data = Path(args.data_root)
    eng = Engine(args.model, device="cpu", threads=2)
    away = lambda a: a.assessment is not None and a.assessment.reason == "out_of_domain"  # noqa: E731
    print("| set | images | turned away | s |\n|---|---|---|---|")
    for kind, name, ims in sets(data):
        if not ims:
            continue
        t = time.time()
        got = ask(eng, ims)
        print(f"| {kind}: {name} | {len(ims)} | {sum(map(away, got))} | {time.time() - t:.1f} |", flush=True)
    paths = sorted((data / args.val).glob("*/*.jpg"))
    gold = [p.parent.name for p in paths]
    t = time.time()
    with_check = ask(eng, [Image.open(p).convert("RGB") for p in paths])
    with tempfile.TemporaryDirectory() as tmp:  # the same model folder without the check
        plain_dir = Path(tmp) / "m"
        shutil.copytree(args.model, plain_dir, ignore=shutil.ignore_patterns(FILE, "*.md", "train_log.txt"))
        plain = ask(Engine(str(plain_dir), device="cpu", threads=2), [Image.open(p).convert("RGB") for p in paths])
    names = eng.answer_head.tax.names
    ok = lambda a, g: (parse_answer(a, names) or ()) == (g,)  # noqa: E731
    n_away = sum(map(away, with_check))
    changed = sum(str(a) != str(b) for a, b in zip(with_check, plain) if not away(a))
    print(f"| in-domain: {args.val} | {len(paths)} | {n_away} ({n_away / len(paths):.1%}) | {time.time() - t:.1f} |")
    print(f"\nval accuracy without the check {sum(map(ok, plain, gold)) / len(paths):.4f}, with it "
          f"{sum(map(ok, with_check, gold)) / len(paths):.4f} (turned away count as wrong); of the turned-away "
          f"images the model had answered {sum(ok(b, g) for a, b, g in zip(with_check, plain, gold) if away(a))} "
          f"right; other answers changed: {changed}")


if __name__ == "__main__":
    main()
