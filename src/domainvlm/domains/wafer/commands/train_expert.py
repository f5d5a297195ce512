"""`domainvlm train-expert`: the recipe that trains the bundled wafer expert (domains/wafer/expert.py)."""

from __future__ import annotations

NAME = "train-expert"
HELP = "train the compact wafer expert from MixedWM38 + WM-811K (configs/wafer-expert.yaml), selected on val"


def add_arguments(p):
    import argparse

    from ....config import config_help
    from ..expert_config import ExpertConfig

    # every config field with its default and description, read from the dataclass itself (no drift)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = config_help(ExpertConfig)
    p.add_argument("--config", help="YAML with ExpertConfig fields (e.g. configs/wafer-expert.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value, dotted for nested (max_steps=100 compact.layers=2)")


def run(args):
    import json

    from ....config import load_config
    from ..expert_config import ExpertConfig, check

    cfg = load_config(ExpertConfig, args.config, args.overrides)
    check(cfg)  # every value (each phase's) before torch, data or a model loads
    from ..expert import train_expert

    res = train_expert(cfg)
    print(json.dumps({k: v for k, v in res.items() if k != "best"} | {"best": {
        k: v for k, v in (res.get("best") or {}).items() if k != "state"}}))
    return 0
