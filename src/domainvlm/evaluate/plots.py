"""Confusion-matrix PNG (row-normalised, counts annotated where the matrix is small enough to read)."""

from __future__ import annotations

from ..io import atomic_path

# Fonts with CJK glyphs, tried after DejaVu Sans (matplotlib falls back glyph by glyph): class names in Chinese,
# Japanese or Korean are drawn wherever one of them is installed, not as empty boxes.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "SimHei", "Microsoft YaHei",
             "PingFang SC", "Hiragino Sans GB", "Arial Unicode MS")


def _fonts(texts, path) -> list[str]:
    """The font family list for ``texts``; when they hold CJK characters and no font here draws them, one
    warning line (instead of matplotlib's one per missing glyph)."""
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    found = [f for f in CJK_FONTS if f in have]
    if not found and any(ord(ch) >= 0x2E80 for t in texts for ch in str(t)):
        import sys

        print(f"domainvlm: warning: {path}: no font with CJK glyphs is installed (e.g. Debian's fonts-noto-cjk), "
              "so its Chinese/Japanese/Korean class names show as boxes", file=sys.stderr)
    return ["DejaVu Sans", *found]


def plot_confusion(confusion: dict, path, title: str = "") -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"font.family": _fonts([*confusion["rows"], *confusion["cols"], title], path)}), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        _plot(confusion, path, title, plt)


def _plot(confusion: dict, path, title: str, plt) -> None:
    import numpy as np

    rows, cols = confusion["rows"], confusion["cols"]
    m = np.array(confusion["matrix"], dtype=float)
    keep = m.sum(1) > 0  # drop classes absent from the gold set
    m, rows = m[keep], [r for r, k in zip(rows, keep) if k]
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    side = max(6, 0.32 * len(cols))
    fig, ax = plt.subplots(figsize=(side + 2, 0.32 * len(rows) + 3), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if len(cols) <= 40:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=5,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (row-normalised colour, counts)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
