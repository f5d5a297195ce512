"""Training configuration (YAML + CLI overrides, see domainvlm.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models.compact import CompactConfig


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])


@dataclass
class TrainConfig:
    data: str = ""                        # record JSONL (domainvlm data build)
    val_data: str | None = None           # separate val JSONL; else `val_fraction` of `data` is held out
    val_fraction: float = 0.05
    output_dir: str = "runs/model"
    model: str | None = None              # local HF folder; None -> build a new compact model (below)
    compact: CompactConfig = field(default_factory=CompactConfig)
    mode: str = "full"                    # full | lora
    lora: LoraConfig = field(default_factory=LoraConfig)
    max_steps: int = 0                    # > 0 overrides epochs
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 1024
    precision: str = "auto"               # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32
    eval_every: int = 200                 # steps; 0 = only at the end
    eval_samples: int = 64                # val records decoded for the task metric at each eval
    eval_max_new_tokens: int = 64
    save_every: int = 200
    log_every: int = 10
    select_metric: str = "val_loss"       # val_loss (lower is better) or a task metric such as exact_match
    num_workers: int = 0
    seed: int = 0
    trust_remote_code: bool = False
    augment: str = "none"               # none | dihedral (random rotation/mirror of wafer maps; labels kept)
