"""Reliability diagram PNG: accuracy per confidence bin against the diagonal, with the share of answers."""

from __future__ import annotations

from ..io import atomic_path


def plot_reliability(block: dict, path, title: str = "") -> None:
    """``block``: the ``confidence`` metrics (its ``reliability`` bins, ``ece``, ``n``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = block["reliability"]
    w = bins[0]["hi"] - bins[0]["lo"]
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5, 6), dpi=100, height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    full = [b for b in bins if b["n"]]
    ax.bar([b["lo"] for b in full], [b["accuracy"] for b in full], width=w, align="edge", edgecolor="black",
           color="#2a788e", label="accuracy")
    ax.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], "o", color="#fde725", ms=4,
            markeredgecolor="black", label="mean confidence")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or f"reliability: ECE {block['ece']:.4f}, n={block['n']}", fontsize=9)
    n = max(1, block["n"])
    hx.bar([b["lo"] for b in bins], [b["n"] / n for b in bins], width=w, align="edge", color="#440154")
    hx.set_yscale("log")
    hx.set_xlabel("confidence of the answer")
    hx.set_ylabel("share")
    hx.set_xlim(0, 1)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
