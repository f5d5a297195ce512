"""The wafer expert recipe's configuration (fields documented for `train-expert --help`) and its checks.

Kept apart from the recipe (expert.py, which needs torch) so that building the CLI's help stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UserError
from ...models.compact import CompactConfig


def _expert_compact() -> CompactConfig:
    return CompactConfig(image_size=224, patch_size=16, merge_size=2, vision_dim=192, vision_depth=6, vision_heads=6,
                         hidden=256, layers=4, heads=4, kv_heads=2, intermediate=768, vocab_size=4096)


@dataclass
class ExpertConfig:
    mixedwm38: str = "../shared/data/mixedwm38/mixedwm38_trainval.npz"  # MixedWM38 train/val npz
    wm811k: str = "../shared/data/wm811k/wm811k_trainval.npz"  # WM-811K train/val npz
    output_dir: str = "runs/wafer-expert"  # run folder: model/, phases, logs, val_selection.json
    init_model: str | None = None        # continue from a model folder (weights only) instead of a new model
    compact: CompactConfig = field(default_factory=_expert_compact)  # the model built when init_model is None
    max_steps: int = 6000                 # optimizer steps
    time_budget_s: float = 0.0            # > 0: also end (annealed) when this much training time has passed
    batch_size: int = 512                 # maps per step
    lr: float = 1e-3                      # peak learning rate (AdamW)
    min_lr_ratio: float = 0.02            # cosine schedule floor, as a share of lr
    warmup_steps: int = 300               # steps of linear warm-up
    weight_decay: float = 0.05            # AdamW weight decay
    max_grad_norm: float = 1.0            # gradient clipping norm
    ema_decay: float = 0.999              # 0 = no EMA weights
    mixed_frac: float = 0.5               # share of MixedWM38 maps per batch (the rest WM-811K)
    wm811k_balance: float = 0.5           # class-balancing exponent for WM-811K sampling
    dihedral: bool = True                 # random rotation/mirror of every training map
    rotate_frac: float = 0.0              # with dihedral: share of maps turned by a free angle instead
    superpose_frac: float = 0.0           # share of the MixedWM38 samples that are new superposed mixtures
    shift_px: int = 0                     # > 0: replay maps moved by up to this many pixels (map_jitter.py)
    die_noise: float = 0.0                # > 0: replay maps' dies flipped pass<->fail at up to this rate
    presence_loss: float = 0.0            # > 0: weight of the pattern-presence loss on the image tokens (presence.py)
    follow_up_frac: float = 0.08          # share of samples that are a follow-up question about the same map
    short_answer_frac: float = 0.0        # share of diagnosis samples trained only up to the diagnosis line
    out_of_scope_frac: float = 0.02       # share of samples that are an off-topic question (trained refusal)
    eval_at: list[float] = field(default_factory=lambda: [0.5, 0.8, 0.9, 1.0])  # progress points (val selection)
    eval_limit: int = 0                   # > 0: val maps per set at each eval (0 = all)
    eval_spread: bool = False             # with eval_limit: maps evenly spread over each val set, not its first
    #                                       ones (WM-811K's val is ordered by class: its first 500 are all Loc)
    length_buckets: int = 2               # forward each batch in this many length-sorted parts
    log_every: int = 50                   # steps between log lines
    report_to: str = "tensorboard"        # trackers (train/tracking.py): tensorboard | wandb | mlflow | none
    limit_maps: int = 0                   # > 0: first N maps of each split only (smoke tests)
    seed: int = 0                         # seed of data order, initialisation and augmentation
    threads: int = 0                      # > 0: torch CPU threads (1 on a CPU shared with other jobs: 2 threads
    #                                       contending with other processes ran ~10x slower); 0 = torch's default
    phases: list[dict] = field(default_factory=list)  # field overrides per phase (domains/wafer/expert_phases.py)
    overwrite: bool = False               # train again into an output_dir that holds a finished run (refused)
    # A fab's own taxonomy (domains/wafer/expert_extend.py): continue init_model on new classes plus replay
    taxonomy: str | None = None           # YAML/JSON of classes (and mixtures) added to init_model's taxonomy
    new_data: str | None = None           # labelled map npz (domains/wafer/labelled.py) or a labels CSV of map
    #                                       files (image,labels[,split]; mapfiles/labels.py): new classes, train
    new_val: str | None = None            # labelled maps (npz or CSV) for model selection (new-class F1)
    new_test: str | None = None           # held-back labelled maps (npz or CSV), evaluated once on the saved model
    new_frac: float = 0.5                 # share of each batch drawn from new_data (the rest: replay, as above)
    new_augment: str = "mirror"           # mirror (left-right: keeps the notch at the bottom) | dihedral | none
    new_augment_bound: list[str] = field(default_factory=list)  # with new_augment=dihedral: classes bound to an
    #                                       orientation (e.g. Notch-Cluster): maps naming one get mirror only
    new_overlay_frac: float = 0.0         # share of the new-class samples laid over real MixedWM38 train maps
    #                                       (expert_overlay.py: the new pattern on real backgrounds and patterns)
    replay_limit: int = 0                 # > 0: first N train maps of each old set only (replay on a small host)
    eval_baseline: bool = False           # also evaluate init_model on the same val/test maps (after training)
    eval_baseline_test: bool = True       # with eval_baseline: init_model on new_test too (its F1 there is 0:
    #                                       it cannot name the new classes; false saves that eval on a CPU)
    train_vision: bool = True             # false: the vision tower stays frozen (no backward through it: CPU)
    answer_logits: bool = False           # the LM head only where labels are (same loss, less compute)
    # A CNN teacher distilled into the diagnosis line (expert_teacher.py, expert_kd.py); training only, never saved
    # in the model folder
    teacher_steps: int = 0                # > 0: train the CNN teacher this many steps first (-> teacher.safetensors)
    teacher: str | None = None            # a teacher.safetensors of an earlier run, loaded instead of training one
    teacher_batch: int = 256              # maps per teacher step (drawn and augmented as the expert's)
    teacher_lr: float = 0.1               # peak learning rate of the teacher (SGD, one-cycle)
    teacher_width: int = 32               # channels of the teacher's first stage (64: ResNet-18 width, 11 M params)
    teacher_downsample: int = 2           # the teacher sees the canvas average-pooled by this factor (speed)
    teacher_only: bool = False            # train (or load) and score the teacher, save it, and stop
    kd_loss: float = 0.0                  # > 0: weight of the distillation of the teacher into the diagnosis line
    kd_temperature: float = 2.0           # softening of teacher and student (the loss is scaled by T^2)
    kd_support: str = "children"          # student distribution over the trie children (head's choice) or "vocab"
    train_lm_layers: int = 0              # > 0: train only the LM's last N decoder layers and final norm (token
    #                                       embeddings, tied to the LM head, frozen); 0 = the whole LM
    select_drop_limit: float = 0.3        # with select_penalty: old-class exact-match drop (points) allowed
    select_penalty: float = 0.0           # > 0: selection score minus this x (drop - limit, in points / 100) per
    #                                       old val set (init_model scored on val before training); 0 = off


def check(cfg: ExpertConfig) -> None:
    """Every value (each phase's, when phases are given) before any data or model loads or a file is written."""
    if cfg.phases:
        from .expert_phases import phase_configs

        if cfg.teacher_only or any(isinstance(p, dict) and p.get("teacher_only") for p in cfg.phases):
            raise UserError("config: teacher_only trains no model, so it cannot run inside phases (set phases=[])")
        phase_configs(cfg, _check)
    else:
        _check(cfg)


def _check(cfg: ExpertConfig) -> None:
    """One clear error per bad field before any data is loaded: the value rules (train/config_checks.py), then
    the rules between fields."""
    from ...train.config_checks import check_expert
    from ...train.tracking import parse_report_to

    check_expert(cfg)
    parse_report_to(cfg.report_to)  # an unknown tracker or a missing package: before anything is written
    if cfg.follow_up_frac + cfg.out_of_scope_frac > 1.0:
        raise UserError("config: follow_up_frac + out_of_scope_frac must not exceed 1")
    if cfg.new_augment_bound and cfg.new_augment != "dihedral":
        raise UserError("config: new_augment_bound needs new_augment=dihedral (the other maps' augmentation)")
    if cfg.new_overlay_frac > 0 and not (cfg.new_data and cfg.new_frac > 0):
        raise UserError("config: new_overlay_frac needs new_data and new_frac > 0 (the new-class maps it lays over)")
    if cfg.select_penalty > 0 and not cfg.init_model:
        raise UserError("config: select_penalty (old-class drop against init_model) needs init_model")
    if cfg.taxonomy and not cfg.init_model:
        raise UserError("config: taxonomy (classes added to a model's own) needs init_model (the model to continue)")
    if (cfg.new_val or cfg.new_test or cfg.new_frac > 0 and cfg.taxonomy) and not cfg.new_data:
        raise UserError("config: new_data (labelled maps of the new classes) is missing")
    if cfg.taxonomy and cfg.presence_loss > 0:
        raise UserError("config: presence_loss works on the 8 known patterns only; set presence_loss=0 with taxonomy")
    _check_teacher(cfg)
    _check_replay_files(cfg)


# what each replay field takes (sources.detect_format's names), and what the other formats are called
_REPLAY = {"mixedwm38": ("MixedWM38", ("mixedwm38",)), "wm811k": ("WM-811K", ("wm811k-npz", "wm811k-pickle"))}
_FORMATS = {"mixedwm38": "a MixedWM38 npz", "wm811k-npz": "a WM-811K npz", "wm811k-pickle": "a WM-811K pickle"}


def _check_replay_files(cfg: ExpertConfig) -> None:
    """mixedwm38= / wm811k= hold the data set they name: told apart by their npz keys (cheap), so a swapped or
    labelled file stops here, not after a model is built or, swapped, trains silently on the wrong set. A missing
    file is train_expert's "not found" (checking the defaults needs no data)."""
    from .sources import detect_format

    for name, (title, ok) in _REPLAY.items():
        path = getattr(cfg, name)
        if not Path(path).is_file():
            continue
        fmt = detect_format(path)
        if fmt == "labelled-npz":
            raise UserError(f"{path}: is a labelled map set, not a {title} npz ({name}=); labelled maps of new "
                            f"classes go to new_data= / new_val= / new_test=")
        if fmt not in ok:
            other = next(k for k, (_, fmts) in _REPLAY.items() if fmt in fmts)
            raise UserError(f"{path}: is {_FORMATS[fmt]}, not a {title} npz ({name}=); give it as {other}=")
        if fmt == "wm811k-pickle":  # train-expert reads no pickle (they can run code): converted once by data build
            raise UserError(f"{path}: is a pickle (WM-811K LSWMD.pkl?), which train-expert does not read; convert "
                            f"it once: domainvlm data build --source {path} --allow-pickle --val-fraction 0.25 "
                            f"--out DIR, then give DIR/{Path(path).stem}_converted.npz as {name}=")
        _check_val_split(path, name)


def _check_val_split(path, name: str) -> None:
    """The recipe selects on the file's val split: one without it (only train / test) is told how to carve one."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            splits = {str(x) for x in z["split"].tolist()} if "split" in z.files else set()
    except Exception:  # noqa: BLE001 - a damaged file: load_wafer_file's own error names the key
        return
    if "val" not in splits:
        have = f"splits {', '.join(sorted(map(str, splits)))}" if splits else "no split column"
        raise UserError(f"{path}: has {have}, and the recipe selects on val ({name}=); carve one from train: "
                        f"domainvlm data build --source {path} --val-fraction 0.25 --out DIR, then give "
                        f"DIR/{Path(path).stem}_converted.npz as {name}=")


def _check_teacher(cfg: ExpertConfig) -> None:
    if cfg.teacher and cfg.teacher_steps:
        raise UserError("config: set either teacher (load a trained teacher) or teacher_steps (train one), not both")
    if (cfg.kd_loss > 0 or cfg.teacher_only) and not (cfg.teacher or cfg.teacher_steps):
        raise UserError("config: kd_loss / teacher_only need a teacher: teacher_steps > 0 or teacher=PATH")
    if cfg.teacher:  # a teacher file at all (its safetensors header): before the data files are read
        if not Path(cfg.teacher).is_file():
            raise UserError(f"{cfg.teacher}: teacher not found (set teacher=PATH to a teacher.safetensors)")
        from ...train.teacher import teacher_meta

        teacher_meta(cfg.teacher)
