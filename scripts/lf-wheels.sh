#!/usr/bin/env bash
# Wheels for the LLaMA-Factory variants of bench/train_lora_bench.py on the GPU machine (Python 3.12, no
# network there; it already has torch, transformers, peft, accelerate, pyarrow, pandas, torchvision,
# torchaudio, triton). Run here, then carry the folder:  scripts/lf-wheels.sh .whl   (about 5 MB)
# On the machine:  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#                  PYTHONPATH=/tmp/site DISABLE_VERSION_CHECK=1 python3 bench/train_lora_bench.py --variants lf,...
# Versions: LLaMA-Factory 0.9.5 (the newest on PyPI) with the trl / datasets / tyro it pins; liger-kernel 0.8.5
# (0.6.x does not import on transformers 5.x); pydantic 2.10 (its needs are met there). Licences: LLaMA-Factory,
# trl, datasets Apache-2.0; liger-kernel BSD-2; all bench-only tools, none is a domainvlm dependency.
set -euo pipefail
D=${1:-.whl}
mkdir -p "$D"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$D" \
  llamafactory==0.9.5 datasets==4.0.0 dill==0.4.1 multiprocess==0.70.19 trl==0.24.0 tyro==0.8.14 \
  docstring_parser==0.18.0 shtab==1.13.0 typeguard==4.6.1 fire==0.7.1 termcolor==3.3.0 omegaconf==2.4.0 \
  antlr4-python3-runtime==4.13.2 liger-kernel==0.8.5 pydantic==2.10.6 pydantic_core==2.27.2 annotated_types==0.8.0
ls "$D"
