"""Run inside a throwaway venv holding only stock packages (torch, torchvision, transformers): load a model
folder with AutoProcessor + AutoModelForImageTextToText and check that greedy decoding gives exactly the answers
`domainvlm ask` gave (scripts/stock-load-check.sh passes them in). Imports nothing from domainvlm.

usage: python stock_load_check.py FOLDER ASK_ANSWERS.json MAX_NEW_TOKENS
ASK_ANSWERS.json: [{"image": path, "question": text, "ask": domainvlm ask's answer}]
"""

import json
import sys

import torch
import transformers
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor


def main() -> int:
    folder, answers, max_new = sys.argv[1], json.load(open(sys.argv[2], encoding="utf-8")), int(sys.argv[3])
    proc = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    tok = proc.tokenizer
    print(f"stock classes: {type(proc).__name__} ({type(proc.image_processor).__name__}), {type(model).__name__};"
          f" torch {torch.__version__}, transformers {transformers.__version__}")
    bad = 0
    print("| image | question | tokens | stopped on end-of-turn | same text as `domainvlm ask` | same tokens |")
    print("|---|---|---|---|---|---|")
    for case in answers:
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": case["question"]}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True)
        enc = proc(text=[text], images=[Image.open(case["image"]).convert("RGB")], return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False)
        ids = out[0, enc["input_ids"].shape[1]:].tolist()
        got = tok.decode(ids, skip_special_tokens=True).strip()
        eos = bool(ids) and ids[-1] == tok.eos_token_id
        # ask prints text; its tokens are that text encoded again plus the end-of-turn token
        ask_ids = tok(case["ask"], add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
        same_text, same_ids = got == case["ask"], ids == ask_ids
        bad += not (same_text and same_ids)
        print(f"| {case['image'].rsplit('/', 1)[-1]} | {case['question'][:40]} | {len(ids)} | {eos} | {same_text} |"
              f" {same_ids} |")
        if not same_text:
            print(f"  stock: {got!r}\n  ask:   {case['ask']!r}")
    print(f"{len(answers) - bad} of {len(answers)} answers identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
