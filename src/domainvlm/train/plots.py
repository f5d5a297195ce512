"""PNG loss curves: people read a curve faster than a log."""

from __future__ import annotations

from ..io import atomic_path


def plot_curves(history: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [(h["step"], h["loss"]) for h in history if "loss" in h]
    va = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if tr:
        ax.plot(*zip(*tr), label="train loss", lw=1)
    if va:
        ax.plot(*zip(*va), "o-", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_recipe_curves(train_loss: list[tuple], val: dict[str, list[tuple]], path) -> None:
    """A recipe run (train-expert, train-classify): its train loss (left) and every val score of its weight
    selection (right; ``val`` maps a name to (step, score) points, names starting 'ema/' drawn dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    if train_loss:
        left.plot(*zip(*train_loss), lw=1, label="train loss")
        left.set_yscale("log")
        left.legend()
    left.set_xlabel("optimizer step")
    left.set_ylabel("loss")
    left.grid(alpha=0.3)
    for name, pts in sorted(val.items()):
        right.plot(*zip(*pts), "o--" if name.startswith("ema/") else "o-", ms=3, lw=1, label=name)
    right.set_xlabel("optimizer step")
    right.set_ylabel("val score")
    right.grid(alpha=0.3)
    if val:
        right.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
