"""GPU smoke step: the engine's answer paths on cuda that eval and bench do not take.

For a few MixedWM38 maps, the bundled expert answers (1) plainly, (2) with log-probs (the head's answer scored
teacher-forced: same text, one entry per completion token, finite) and (3) under a json_schema with numbers
(constrained decoding: valid JSON whenever finish_reason is 'stop'). Exits non-zero on any mismatch.
Usage: python scripts/gpu_smoke_engine.py MIXEDWM38.npz [MODEL_DIR [DEVICE]]
"""

import json
import math
import sys

from domainvlm.data.images import load_image
from domainvlm.inference.engine import Engine, Sampling

npz = sys.argv[1]
model = sys.argv[2] if len(sys.argv) > 2 else "src/domainvlm/assets/wafer-expert"
eng = Engine(model, device=sys.argv[3] if len(sys.argv) > 3 else "cuda")
imgs = [load_image(f"{npz}#{k}", None, eng.canvas_size) for k in range(4)]
convs = [([{"role": "user", "content": "<image>\nWhat defect pattern does this wafer map show?"}], [im])
         for im in imgs]
convs.append(([{"role": "user", "content": "<image>\n这片晶圆的良率是多少？"}], [imgs[0]]))
plain = eng.generate(convs, Sampling(max_new_tokens=64))
scored = eng.generate(convs, Sampling(max_new_tokens=64, logprobs=2))
bad = 0
for p, s in zip(plain, scored):
    lp = s.logprobs or []
    ok = str(p) == str(s) and len(lp) == s.completion_tokens and all(math.isfinite(e["logprob"]) for e in lp)
    bad += not ok
    print(f"{'ok ' if ok else 'BAD'} logprobs: {len(lp)} entries, {s.completion_tokens} tokens: {str(s)[:70]!r}")
schema = {"type": "object", "properties": {"pattern": {"type": "string"}, "score": {"type": "number"}},
          "required": ["pattern", "score"], "additionalProperties": False}
for a in eng.generate(convs[:2], Sampling(max_new_tokens=48, json_schema=json.dumps(schema))):
    try:
        json.loads(str(a))
        ok = True
    except ValueError:
        ok = a.finish_reason == "length"  # cut short: reported as such, never 'stop' with invalid JSON
    bad += not ok
    print(f"{'ok ' if ok else 'BAD'} json_schema ({a.finish_reason}): {str(a)[:70]!r}")
raise SystemExit(1 if bad else 0)
