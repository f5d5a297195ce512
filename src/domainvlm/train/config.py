"""Training configuration (YAML + CLI overrides, see domainvlm.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models.compact import CompactConfig


@dataclass
class LoraConfig:
    r: int = 16                           # LoRA rank
    alpha: int = 32                       # LoRA scaling numerator (update scaled by alpha / r)
    dropout: float = 0.05                 # dropout on the LoRA input
    # linear layers (by name suffix) that get LoRA adapters
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])
    layers: str | None = None             # LM layers that get LoRA: "0-7,12", "-4--1" (last four); None = all
    lm: bool = True                       # LoRA on the language model
    vision: bool = False                  # LoRA on the vision tower's linears too


@dataclass
class TrainConfig:
    data: str = ""                        # record JSONL (domainvlm data build)
    val_data: str | None = None           # separate val JSONL; else `val_fraction` of `data` is held out
    val_fraction: float = 0.05            # share of `data` held out for validation when no val_data is given
    #                                       (0: none; no val step, model/ keeps the lowest train loss's weights)
    output_dir: str = "runs/model"        # run folder: model/, checkpoint/, tb/, logs and curves
    model: str | None = None              # local HF folder; None -> build a new compact model (below)
    compact: CompactConfig = field(default_factory=CompactConfig)  # the compact model built when model is None
    mode: str = "full"                    # full | lora
    lora: LoraConfig = field(default_factory=LoraConfig)  # LoRA settings (mode=lora)
    # Dense training per part (None = mode default: all for full, none for lora; see train/tuning.py).
    train_vision: bool | None = None
    train_projector: bool | None = None
    train_lm: bool | None = None
    stage: str | None = None              # align (projector only) | instruct; two-stage recipes in configs/
    init_adapter: str | None = None       # continue training this LoRA adapter folder (stage 2 of two)
    quantization: str | None = None       # 4bit | 8bit: QLoRA (bitsandbytes, language model only; mode=lora)
    gradient_checkpointing: float = 0.0   # fraction of LM layers recomputed in backward (true = 1.0)
    attn_implementation: str | None = None  # sdpa | eager | flash_attention_2 | varlen (packed training
    #                                         forwards through torch's varlen flash attention; needs packing)
    packing: bool = False                 # drop padding: one packed row per batch, per-sample positions
    answer_logits: bool = False           # compute the LM head only where labels are (same loss, less memory)
    lora_fp32_inputs: bool = False        # peft's default: copy LoRA inputs to float32 even under bf16 autocast
    fused_lora: bool = True               # LoRA linears as one autograd node each (train/fused_lora.py)
    compile: bool = False                 # torch.compile the LM decoder layers (GPU: +9% tokens/s, ~1 min to compile)
    liger_kernels: bool = False           # Liger's Triton kernels for RMSNorm/SwiGLU/RoPE/LayerNorm (CUDA only)
    max_steps: int = 0                    # > 0 overrides epochs
    epochs: float = 1.0                   # passes over the training data (when max_steps is 0)
    batch_size: int = 8                   # examples per step and device
    grad_accum: int = 1                   # steps of gradients summed before each optimizer step
    lr: float = 1e-3                      # peak learning rate (AdamW)
    weight_decay: float = 0.01            # AdamW weight decay
    warmup_ratio: float = 0.05            # share of steps of linear warm-up
    min_lr_ratio: float = 0.0             # cosine schedule floor, as a share of lr
    max_grad_norm: float = 1.0            # gradient clipping norm (0 = off)
    max_length: int = 1024                # longest tokenised example; longer ones are cut
    precision: str = "auto"               # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32
    eval_every: int = 200                 # steps; 0 = only at the end
    eval_samples: int = 64                # val records decoded for the task metric at each eval
    eval_max_new_tokens: int = 64         # longest answer decoded at each eval
    save_every: int = 200                 # steps between checkpoints (0 = only at the end)
    save_total_limit: int = 1             # checkpoints kept: the latest in checkpoint/, older as checkpoint-<step>
    log_every: int = 10                   # steps between loss log lines
    select_metric: str = "val_loss"       # val_loss (lower is better) or a task metric such as exact_match
    num_workers: int = 0                  # DataLoader worker processes
    seed: int = 0                         # seed of data order, initialisation and augmentation
    min_pixels: int | None = None         # Qwen2-VL-family bases: image resolution floor in pixels (None = the base's)
    max_pixels: int | None = None         # Qwen2-VL-family bases: image resolution cap, the image-token budget per
    #                                       image (fewer pixels: less memory; None = the base's)
    trust_remote_code: bool = False       # allow Python code shipped in the base folder
    report_to: str | list[str] = "tensorboard"  # experiment trackers, comma-separated or a list (as in HF
    #                                       TrainingArguments): tensorboard | wandb | mlflow | none
    #                                       (offline, inside output_dir: tb/, wandb/ (offline mode), mlruns/)
    augment: str = "none"               # none | dihedral (random rotation/mirror of wafer maps; labels kept) |
    #                                     domain (the records' domain's own, e.g. classify: flips, crops, jitter)
