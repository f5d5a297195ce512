#!/usr/bin/env bash
# Wheels for the ms-swift variants of bench/train_lora_bench.py on the GPU machine (Python 3.12, no network there;
# it already has torch, transformers, peft, accelerate, pyarrow, pandas, torchvision, aiohttp, einops, scipy,
# requests, ...). Run here, then carry the folder (in a call of its own, not with LLaMA-Factory's .whl: about 11 MB):
#   scripts/swift-wheels.sh .swhl
# On the machine:  python3 -m pip install -q --no-index --no-deps --target /tmp/site .swhl/*.whl
#                  PYTHONPATH=/tmp/site python3 bench/train_lora_bench.py --variants swift,...
# Only what ms-swift imports for Qwen2-VL LoRA SFT, not its whole requirement list (fastapi, openai, oss2, nltk,
# tensorboard, ... serve its deploy / eval / upload commands). Versions: ms-swift 4.6.0 (the newest on PyPI;
# transformers < 5.20, so 5.17 is inside its range; it pins peft < 0.21 in metadata only, the machine's 0.21 is
# not checked at run time); modelscope 1.37.1 (the newest without modelscope-hub, whose import needs
# cryptography; ms-swift needs >= 1.23); datasets 4.8.4 (ms-swift uses its Json feature, which 4.0 lacks; it pins
# < 4.8.5); trl 0.24.0 (< 1.0); pydantic 2.10 (its protocol types); qwen-vl-utils 0.0.14 (its Qwen2-VL image
# resizing); liger-kernel 0.8.5 (0.6.x does not import on transformers 5.x). Licences: ms-swift, modelscope,
# datasets, trl, qwen-vl-utils Apache-2.0; dill, multiprocess BSD-3; json-repair, pydantic, annotated-types MIT;
# liger-kernel BSD-2. All bench-only tools, none is a domainvlm dependency.
set -euo pipefail
D=${1:-.swhl}
mkdir -p "$D"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$D" \
  ms-swift==4.6.0 modelscope==1.37.1 datasets==4.8.4 dill==0.4.1 multiprocess==0.70.19 trl==0.24.0 \
  json_repair==0.64.6 qwen-vl-utils==0.0.14 pydantic==2.10.6 pydantic_core==2.27.2 annotated_types==0.8.0 \
  liger-kernel==0.8.5
ls "$D"
