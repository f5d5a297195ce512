"""One option set for every inference command (commands/_args.py), wired through to the engine; a model
folder's generation_config.json is what decoding uses unless an option overrides it."""

from __future__ import annotations

import json
import shutil

import pytest

from domainvlm.cli import build_parser, main
from domainvlm.inference.engine import Engine, Sampling

COMMANDS = {"ask": ["q", "--image", "x.png"], "chat": [], "predict": ["in/"], "eval": ["--data", "d", "--out", "m"],
            "serve": [], "webui": [], "bench": []}
SHARED = {"model", "device", "dtype", "threads", "quantization", "trust_remote_code", "min_pixels", "max_pixels",
          "temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed"}


def _sub(name):
    p = build_parser()
    return next(a for a in p._actions if a.dest == "command").choices[name]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_inference_command_has_the_shared_options(cmd):
    dests = {a.dest for a in _sub(cmd)._actions}
    assert SHARED <= dests, SHARED - dests
    args = _sub(cmd).parse_args(COMMANDS[cmd] + ["--quantization", "4bit", "--trust-remote-code", "--max-pixels",
                                                 "4096", "--seed", "3", "--repetition-penalty", "1.1"])
    assert (args.quantization, args.trust_remote_code, args.max_pixels, args.seed) == ("4bit", True, 4096, 3)
    assert args.temperature is None and args.top_p is None  # unset: the model's generation_config decides


@pytest.mark.parametrize("cmd", ["ask", "predict", "eval", "bench"])
def test_model_options_reach_the_engine(cmd, monkeypatch, tmp_path):
    seen = {}

    class Stop(Exception):
        pass

    def fake(self, model_dir=None, **kw):
        seen.update(kw, model_dir=model_dir)
        raise Stop

    monkeypatch.setattr(Engine, "__init__", fake)
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "a", "images": ["x.png"], "labels": {
        "task": "wafer", "defects": ["Center"]}, "messages": [{"role": "user", "content": "<image>\nq"},
                                                              {"role": "assistant", "content": "a"}]}) + "\n")
    argv = {"ask": ["ask", "q", "--image", str(img)], "predict": ["predict", str(tmp_path), "-q", "q",
                                                                  "-o", str(tmp_path / "o.jsonl")],
            "eval": ["eval", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "m.json")],
            "bench": ["bench", "--runs", "1", "--no-latency"]}[cmd]
    with pytest.raises(Stop):
        main(argv + ["--model", "M", "--dtype", "bfloat16", "--quantization", "8bit", "--trust-remote-code",
                     "--min-pixels", "1024", "--max-pixels", "4096", "--threads", "1"])
    assert seen["model_dir"] == "M"
    assert {k: seen[k] for k in ("dtype", "quantization", "trust_remote_code", "min_pixels", "max_pixels",
                                 "threads")} == {"dtype": "bfloat16", "quantization": "8bit",
                                                 "trust_remote_code": True, "min_pixels": 1024,
                                                 "max_pixels": 4096, "threads": 1}


def test_bad_pixel_range_is_one_line(tiny_model_dir, capsys, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert main(["ask", "q", "--image", str(tmp_path / "x.png"), "--model", str(tiny_model_dir),
                 "--min-pixels", "9000", "--max-pixels", "100"]) == 2
    assert "--min-pixels 9000 is above --max-pixels 100" in capsys.readouterr().err


def _answer(eng, s):
    return eng.generate([([{"role": "user", "content": "hello there"}], [])], s)[0]


def test_generation_config_is_respected_unless_overridden(tiny_model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    gc = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps(gc | {"repetition_penalty": 5.0}))
    eng = Engine(folder, device="cpu")
    base = Sampling(max_new_tokens=24, temperature=0)
    default = _answer(eng, base)
    assert default == _answer(eng, Sampling(max_new_tokens=24, temperature=0, repetition_penalty=5.0))
    assert default != _answer(eng, Sampling(max_new_tokens=24, temperature=0, repetition_penalty=1.0)), \
        "the penalty changed nothing: this test would prove nothing"

    (folder / "generation_config.json").write_text(json.dumps(gc | {"do_sample": True, "temperature": 1.5,
                                                                     "top_k": 0}))
    eng = Engine(folder, device="cpu")
    sampled = {_answer(eng, Sampling(max_new_tokens=12, seed=s)) for s in range(4)}
    assert len(sampled) > 1  # the folder's do_sample is used when no temperature is given
    greedy = {_answer(eng, Sampling(max_new_tokens=12, seed=s, temperature=0)) for s in range(3)}
    assert len(greedy) == 1  # an explicit temperature 0 overrides it
    eff = eng.effective_sampling(Sampling())
    assert (eff.temperature, eff.top_k, eff.repetition_penalty) == (1.5, 0, 1.0)


def test_train_pixel_options_need_a_base(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))  # the trainer tests' data helper
    from test_train_resume import _data

    data = _data(tmp_path, n=4)
    assert main(["train", f"data={data}", f"output_dir={tmp_path / 'run'}", "max_pixels=4096", "max_steps=1",
                 "eval_samples=0"]) == 2
    assert "min_pixels/max_pixels apply to a base model" in capsys.readouterr().err
    assert not (tmp_path / "run" / "model").exists()
