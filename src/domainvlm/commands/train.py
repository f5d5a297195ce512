"""`domainvlm train`: fine-tune any local model (or build and train the compact one)."""

from __future__ import annotations

NAME = "train"
HELP = "train a model: --config YAML plus key=value overrides (e.g. max_steps=300 mode=lora)"


def add_arguments(p):
    import argparse

    from ..config import config_help
    from ..train.config import TrainConfig

    # every config field with its default and description, read from the dataclass itself (no drift)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = config_help(TrainConfig)
    p.add_argument("--config", help="YAML file with TrainConfig fields")
    p.add_argument("overrides", nargs="*", help="key=value, dotted for nested (lora.r=8, compact.layers=2)")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs and CI)")


def run(args):
    import json

    from ..config import load_config
    from ..train.config import TrainConfig
    from ..train.config_checks import check_train

    if any(o.startswith("taxonomy=") for o in args.overrides):  # the spelling: say where it lives
        from ..errors import UserError

        raise UserError("taxonomy=: continuing a wafer expert on a fab's own taxonomy is the expert recipe's: "
                        "domainvlm train-expert init_model=MODEL taxonomy=YAML new_data=MAPS.npz "
                        "(configs/fab-taxonomy-n50-cpu.yaml)")
    cfg = load_config(TrainConfig, args.config, args.overrides)
    check_train(cfg)  # train() checks again (library callers); here before the trainer's imports too
    from ..train.trainer import train

    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if args.no_progress:  # transformers' own bars too ('Writing model shards', 'Loading weights')
        hf_logging.disable_progress_bar()
    try:
        res = train(cfg, resume=args.resume, progress=not args.no_progress)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    print(json.dumps(res))
    return 0
