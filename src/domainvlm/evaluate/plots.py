"""Confusion-matrix PNG (row-normalised, counts annotated where the matrix is small enough to read)."""

from __future__ import annotations

from ..io import atomic_path


def plot_confusion(confusion: dict, path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
