"""Multi-phase wafer-expert recipe: one command, one config, phases run in order and resume by phase.

``phases`` in the config is a list of field overrides; phase i trains into ``output_dir/phase<i>`` and starts
from the previous phase's model (unless it names ``init_model``). A phase whose ``val_selection.json`` exists
is finished and skipped, so a recipe longer than one GPU session is finished by running the same command
again (with ``output_dir`` kept between the sessions). The last phase's model is copied to
``output_dir/model``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from ...config import from_dict
from ...errors import UserError


def phase_configs(cfg, check=None) -> list:
    """One ExpertConfig per phase (the base config merged with each phase's overrides), output dirs set;
    ``check(phase_cfg)`` (raising UserError) runs on each, so its errors name the phase."""
    base = dataclasses.asdict(cfg)
    base.pop("phases")
    out = []
    for i, ov in enumerate(cfg.phases, 1):
        if not isinstance(ov, dict):
            raise UserError(f"config: phases[{i - 1}] must be a mapping of field overrides")
        if "phases" in ov or "output_dir" in ov:
            raise UserError(f"config: phases[{i - 1}] cannot set 'phases' or 'output_dir'")
        merged = {**base, **ov, "phases": [], "overwrite": True}  # run_phases decides which phases run
        if isinstance(ov.get("compact"), dict):
            merged["compact"] = {**base["compact"], **ov["compact"]}
        merged["output_dir"] = str(Path(cfg.output_dir) / f"phase{i}")
        if i > 1 and "init_model" not in ov:
            merged["init_model"] = str(Path(out[-1].output_dir) / "model")
        try:
            out.append(from_dict(type(cfg), merged))
            if check:
                check(out[-1])
        except UserError as e:
            raise UserError(f"config: phases[{i - 1}]: {str(e).removeprefix('config: ')}") from None
    return out


def finished(folder) -> bool:
    """A run folder whose training ended: its val_selection.json and model/ are written last."""
    return (Path(folder) / "val_selection.json").exists() and (Path(folder) / "model").is_dir()


def prepare_run_dir(cfg) -> None:
    """A single-phase run into ``output_dir``: a finished run there is refused unless overwrite=true (phases
    skip theirs, but a rerun of one phase has nothing to resume and would replace the model); the log and
    TensorBoard events of an earlier run there are moved to ``train_log.prev.txt`` / ``tb.prev``, so this
    run's curves and log are its own (they were appended to the earlier run's)."""
    out = Path(cfg.output_dir)
    if finished(out) and not cfg.overwrite:
        raise UserError(f"{out}: holds a finished run (val_selection.json, model/); give another output_dir, or "
                        f"overwrite=true to train again")
    moved = []
    for name, prev in (("train_log.txt", "train_log.prev.txt"), ("tb", "tb.prev")):
        if (out / name).exists():
            if (out / prev).is_dir():
                shutil.rmtree(out / prev)
            else:
                (out / prev).unlink(missing_ok=True)
            (out / name).rename(out / prev)
            moved.append(prev)
    if moved:
        print(f"# {out}: the earlier run's log kept as {', '.join(moved)}", flush=True)


def run_phases(cfg, train_one, check=None) -> dict:
    """Run (or skip, when finished) every phase with ``train_one(cfg) -> summary``; returns the last summary.
    Every phase is built and checked before the first one trains."""
    phases = phase_configs(cfg, check)
    summary: dict = {}
    for i, pcfg in enumerate(phases, 1):
        done = Path(pcfg.output_dir) / "val_selection.json"
        if finished(pcfg.output_dir) and not cfg.overwrite:
            print(f"# phase {i}/{len(phases)} finished earlier ({done}), skipped", flush=True)
            summary = json.loads(done.read_text(encoding="utf-8"))["summary"]
            continue
        print(f"# phase {i}/{len(phases)} -> {pcfg.output_dir}", flush=True)
        summary = train_one(pcfg)
    final, tmp = Path(cfg.output_dir) / "model", Path(cfg.output_dir) / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(Path(phases[-1].output_dir) / "model", tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return summary
