"""Experiment trackers (``report_to``) through accelerate's trackers: TensorBoard, Weights & Biases, MLflow.

Everything stays in the run folder and offline unless the user's environment says otherwise:
TensorBoard writes ``<output_dir>/tb``; wandb runs in offline mode under ``<output_dir>/wandb`` (``wandb sync``
uploads it later; an explicit ``WANDB_MODE`` is respected); MLflow logs to a file store ``<output_dir>/mlruns``
(an explicit ``MLFLOW_TRACKING_URI`` is respected). Only the main process logs (accelerate's trackers see to it).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import UserError

TRACKERS = ("tensorboard", "wandb", "mlflow")
# the module each tracker needs, and what to install when it is missing
_NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
          "mlflow": ("mlflow", "mlflow-skinny (or mlflow)")}


def parse_report_to(value) -> list[str]:
    """``report_to`` ("tensorboard", "wandb,mlflow", a list, "none" or "") -> tracker names, checked: an unknown
    name or a tracker whose package is missing is a one-line UserError naming it."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    names = []
    for raw in items:
        name = str(raw).strip().lower()
        if name in ("", "none"):
            continue
        if name not in TRACKERS:
            raise UserError(f"report_to: unknown tracker {name!r} (choose from {', '.join(TRACKERS)}, or none)")
        module, package = _NEEDS[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"report_to={name}: the {package} package is not installed "
                            f"(pip install {package.split()[0]}, or drop {name} from report_to)")
        if name not in names:
            names.append(name)
    return names


def make_trackers(names: list[str], out: Path, run_name: str) -> list:
    """accelerate tracker objects for ``Accelerator(log_with=...)``, each pointed inside ``out``."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    trackers = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker("tb", str(out)))
        elif name == "wandb":
            trackers.append(WandBTracker("domainvlm", dir=str(out), name=run_name,
                                         mode=os.environ.get("WANDB_MODE", "offline")))
        elif name == "mlflow":
            trackers.append(MLflowTracker(experiment_name="domainvlm", run_name=run_name))
    return trackers


def start(acc, out: Path, config: dict) -> None:
    """Start the accelerator's trackers (main process) and store the flattened config with wandb / MLflow
    (train_config.json already holds it for TensorBoard readers)."""
    if not acc.log_with or not acc.is_main_process:
        return
    if any(t.name == "mlflow" for t in acc.log_with):
        use_local_mlflow(out)
    acc.init_trackers("domainvlm")
    flat = flatten(config)
    for t in acc.trackers:
        if t.name != "tensorboard":
            t.store_init_configuration(flat)


def use_local_mlflow(out: Path) -> None:
    """MLflow logs to a file store ``<out>/mlruns`` unless ``MLFLOW_TRACKING_URI`` says otherwise."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        # MLflow 3 refuses a file store unless this is set; the alternative (a database) needs a server
        # package stack, and a folder inside the run is what offline tracking wants
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri((out.resolve() / "mlruns").as_uri())


def finish(acc) -> None:
    """Flush and close the trackers (main process; accelerate's own ``end_training`` would also destroy the
    process group, which multi-process runs still need for the final save)."""
    for t in acc.trackers:
        t.finish()
    acc.trackers = []


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested config -> {"lora.r": 16, ...}; lists and None as text (what trackers' params accept)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out
