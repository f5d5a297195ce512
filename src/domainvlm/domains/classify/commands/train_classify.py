"""`domainvlm train-classify`: the recipe for a compact classification expert (domains/classify/recipe.py)."""

from __future__ import annotations

NAME = "train-classify"
HELP = ("train a compact classification expert from a labelled image folder/CSV with train and val splits "
        "(e.g. configs/neu-steel-expert.yaml), selected on val")


_FIELDS = "<config fields>"


def add_arguments(p):
    import argparse

    class Help(argparse.RawDescriptionHelpFormatter):
        """Every config field in --help, read from the dataclass when help is shown: the recipe imports torch,
        which every other command's start would pay for."""

        def add_text(self, text):
            if text == _FIELDS:
                from ....config import config_help
                from .. import _Recipe as recipe

                text = config_help(recipe.config_class())
            super().add_text(text)

    p.formatter_class, p.epilog = Help, _FIELDS
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
