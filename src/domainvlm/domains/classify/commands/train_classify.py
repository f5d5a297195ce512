"""`domainvlm train-classify`: the recipe for a compact classification expert (domains/classify/recipe.py)."""

from __future__ import annotations

NAME = "train-classify"
HELP = ("train a compact classification expert from a labelled image folder/CSV with train and val splits "
        "(e.g. configs/neu-steel-expert.yaml), selected on val")


def add_arguments(p):
    p.add_argument("--config", help="YAML with ClassifyExpertConfig fields (e.g. configs/neu-steel-expert.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value, dotted for nested (max_steps=100 compact.layers=2)")


def run(args):
    import json

    from ....config import load_config
    from .. import _Recipe as recipe
    cfg = load_config(recipe.config_class(), args.config, args.overrides)
    recipe.check(cfg)  # every value before data or a model loads (train() checks again)
    res = recipe.train(cfg)
    print(json.dumps(res))
    return 0
