"""A model folder with a file missing or damaged: one line naming the folder and the file, exit 2, before any
answer (the loader every command and server goes through); valid folders laid out otherwise still load."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from PIL import Image

from domainvlm.cli import main
from domainvlm.errors import UserError
from domainvlm.models.loader import load_model


def _cut(p, size):
    os.truncate(p, size)


DAMAGE = {  # name -> (what is done to the folder, what the one line must say)
    "no tokenizer.json": (lambda d: (d / "tokenizer.json").unlink(), r"/m: tokenizer\.json missing"),
    "tokenizer.json cut": (lambda d: _cut(d / "tokenizer.json", 300), r"/m/tokenizer\.json: malformed JSON"),
    "no processor_config.json": (lambda d: (d / "processor_config.json").unlink(),
                                 r"/m: processor_config\.json missing"),
    "processor_config.json bad": (lambda d: (d / "processor_config.json").write_text("{bad"),
                                  r"/m/processor_config\.json: malformed JSON"),
    "processor_config.json empty": (lambda d: (d / "processor_config.json").write_text("{}"),
                                    r"/m/processor_config\.json: no usable image processor settings"),
    "no chat_template.jinja": (lambda d: (d / "chat_template.jinja").unlink(), r"/m: chat_template\.jinja missing"),
    "chat template syntax": (lambda d: (d / "chat_template.jinja").write_text("{% for %}"),
                             r"/m: chat template does not compile"),
    "chat_template.json bad": (lambda d: (d / "chat_template.json").write_text('{"chat_template": '),
                               r"/m/chat_template\.json: malformed JSON"),
    "chat_template.json without it": (lambda d: (d / "chat_template.json").write_text('{"template": "x"}'),
                                      r"/m/chat_template\.json: field 'chat_template' missing"),
    "model.safetensors cut": (lambda d: _cut(d / "model.safetensors", 1000),
                              r"/m/model\.safetensors: not a readable safetensors file .*cut short"),
    "model.safetensors half": (lambda d: _cut(d / "model.safetensors", (d / "model.safetensors").stat().st_size // 2),
                               r"/m/model\.safetensors: not a readable safetensors file"),
}


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(p)
    return p


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_model_folder_is_one_line_naming_the_file(tiny_model_dir, tmp_path, image, one_error_line, case):
    damage, says = DAMAGE[case]
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    damage(d)
    assert main(["ask", "--model", str(d), "--image", str(image), "What is this?"]) == 2
    line = one_error_line()
    assert line.startswith("domainvlm: error: ")
    assert re.search(says, line), line
    assert "huggingface.co" not in line and "Traceback" not in line


def test_template_kept_in_tokenizer_config_still_loads(tiny_model_dir, tmp_path):
    """Some HF folders keep the chat template in tokenizer_config.json, with no chat_template.jinja."""
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    template = (d / "chat_template.jinja").read_text(encoding="utf-8")
    (d / "chat_template.jinja").unlink()
    cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": template}), encoding="utf-8")
    _, proc = load_model(d, device="cpu")
    assert proc.chat_template == template


def test_damaged_folder_fails_before_the_weights_load(tiny_model_dir, tmp_path, monkeypatch):
    """A processor problem is found first: the (slow, for a real base) weight load never starts."""
    from domainvlm.models import loader

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / "tokenizer.json").unlink()
    monkeypatch.setattr(loader, "_model_class", lambda t: pytest.fail("weights loaded before the files were checked"))
    with pytest.raises(UserError, match="tokenizer.json missing"):
        load_model(d, device="cpu")


def _json_template_only(src, d, template=None):
    """``d``: a copy of ``src`` whose chat template is only in chat_template.json (the file transformers 4.x
    processors saved, as many hub folders ship; 5.x saves chat_template.jinja)."""
    shutil.copytree(src, d)
    jinja = (d / "chat_template.jinja").read_text(encoding="utf-8")
    (d / "chat_template.jinja").unlink()
    (d / "chat_template.json").write_text(json.dumps({"chat_template": template or jinja}), encoding="utf-8")
    return jinja


def test_template_kept_only_in_chat_template_json_loads(tmp_path):
    from domainvlm.models.tiny import build_tiny

    build_tiny("qwen2_vl", tmp_path / "base")
    template = _json_template_only(tmp_path / "base", tmp_path / "m")
    _, proc = load_model(tmp_path / "m", device="cpu")  # before: "chat_template.jinja missing"
    assert proc.chat_template == template
    proc.save_pretrained(tmp_path / "saved")  # saved the 5.x way, and read back
    assert (tmp_path / "saved" / "chat_template.jinja").read_text(encoding="utf-8") == template


def test_chat_template_json_wins_over_the_jinja_as_in_stock_transformers(tiny_model_dir, tmp_path):
    """Both files (a 4.x folder re-saved by 5.x tools): the one stock ProcessorMixin reads, chat_template.json."""
    from transformers import ProcessorMixin

    from domainvlm.models.loader import load_processor

    d = tmp_path / "m"
    jinja = _json_template_only(tiny_model_dir, d, template="{{ 'json: ' }}" + "{{ messages[0]['role'] }}")
    (d / "chat_template.jinja").write_text(jinja, encoding="utf-8")
    stock = ProcessorMixin.get_processor_dict(str(d), local_files_only=True)[0]["chat_template"]
    assert load_processor(d).chat_template == stock != jinja
