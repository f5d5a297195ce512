"""The run log of the GPU recipes (train-expert, train-classify), which have their own loops.

Text lines go to stdout and ``<output_dir>/train_log.txt`` as before; every metrics record (the periodic train
record and each val candidate of the weight selection) also goes to the ``report_to`` trackers (tracking.py:
TensorBoard under ``<output_dir>/tb`` by default, wandb / MLflow offline in the run folder), and the end of the
run draws ``<output_dir>/training_curves.png``: the train loss and every val score over the steps. On a
terminal a progress bar sits below the lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .plots import plot_recipe_curves
from .tracking import flatten, make_trackers, parse_report_to, use_local_mlflow


def metric_values(rec: dict) -> tuple[dict, int] | None:
    """A history record -> ({tag: number}, step) for the trackers, or None (no step): train records as
    ``train/<field>``, val candidates as ``val/<weights>/<set>.<metric>`` (raw and EMA weights apart)."""
    if "eval_step" in rec:
        tag, step = f"val/{rec.get('weights', 'model')}/", rec["eval_step"]
        fields = {k: v for k, v in flatten(rec).items() if k not in ("eval_step", "weights")}
    elif "step" in rec:
        tag, step = "train/", rec["step"]
        fields = {k: v for k, v in rec.items() if k != "step"}
    else:
        return None
    return {tag + k: v for k, v in fields.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith(".n")}, int(step)


def curves(history: list[dict]) -> tuple[list[tuple], dict[str, list[tuple]]]:
    """(train loss points, {val series name: points}) of a history, for the curves PNG."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "eval_step" not in h]
    val: dict[str, list[tuple]] = {}
    for h in history:
        got = metric_values(h) if "eval_step" in h else None
        for tag, v in (got[0].items() if got else ()):
            if not tag.endswith("unparsed_rate"):
                val.setdefault(tag.removeprefix("val/"), []).append((got[1], v))
    return train, val


class RecipeLog:
    def __init__(self, out: Path, report_to="tensorboard", config: dict | None = None):
        self.out = Path(out)
        self.fh = open(self.out / "train_log.txt", "a", encoding="utf-8")
        names = parse_report_to(report_to)
        if "mlflow" in names:
            use_local_mlflow(self.out)
        self.trackers = make_trackers(names, self.out, self.out.name)
        for t in self.trackers:  # accelerate's trackers outside an Accelerator: started by hand
            t.start()
            if config is not None and t.name != "tensorboard":  # TensorBoard readers have train_log's config
                t.store_init_configuration(flatten(config))
        self.sent = 0  # history records already sent to the trackers
        self.bar = None  # the progress bar (on a terminal only; logs and CI get the text lines alone)
        self.loss = None

    def __call__(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)  # above the bar, which stays at the bottom
            sys.stdout.flush()
        else:
            print(msg, flush=True)
        self.fh.write(msg + "\n")
        self.fh.flush()

    def progress(self, progress: float, step: int, loss: float | None = None) -> None:
        """Move the bar to ``progress`` (0..1, the recipe's own: steps or time budget, whichever ends first);
        ``loss`` as last logged (a number the caller already has: reading it off the GPU every step would stall)."""
        if loss is not None:
            self.loss = loss
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=1000, desc="train", unit="", bar_format="{desc} {percentage:3.0f}%|{bar}|"
                            "{postfix} [{elapsed}<{remaining}]", disable=None, file=sys.stderr)
        self.bar.n = min(1000, round(progress * 1000))
        self.bar.set_postfix_str(f"step {step}" + ("" if self.loss is None else f", loss {self.loss:.4g}"),
                                 refresh=False)
        self.bar.refresh()

    def sync(self, history: list[dict]) -> None:
        """Send the records of ``history`` not sent yet (call it after each append / weight selection)."""
        for rec in history[self.sent:]:
            got = metric_values(rec)
            if got and got[0]:
                for t in self.trackers:
                    t.log(got[0], step=got[1])
        self.sent = len(history)

    def close(self, history: list[dict] | None = None) -> None:
        """Send what is left, close the trackers and the text log, and draw the curves PNG of ``history``."""
        if history:
            self.sync(history)
            plot_recipe_curves(*curves(history), self.out / "training_curves.png")
        for t in self.trackers:
            t.finish()
        self.trackers = []
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.fh.close()
