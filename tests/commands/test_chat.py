"""`domainvlm chat` driven through a pseudo-terminal: image, two questions, switch image, clear, stop."""

from __future__ import annotations

import os
import re
import sys

import pytest
from PIL import Image

from domainvlm.inference.engine import Engine, Sampling

pexpect = pytest.importorskip("pexpect", reason="pexpect not installed (pip install 'domainvlm[test]')")

N = 6
Q1, Q2, Q3 = "What defect pattern does this wafer map show?", "What are the likely causes?", "Hello there"


def spawn(tiny_model_dir, *extra):
    env = {**os.environ, "TERM": "dumb", "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}
    return pexpect.spawn(sys.executable, ["-m", "domainvlm", "chat", "--model", str(tiny_model_dir),
                                          "--max-new-tokens", str(N), *extra],
                         env=env, encoding="utf-8", codec_errors="replace", timeout=90)


def ask(child, question: str, prompt: str = "User: ", answer_tag: str = "Model: ") -> str:
    """Send a question, return the streamed answer printed between the answer tag and the next prompt."""
    child.sendline(question)
    child.expect_exact(answer_tag)
    child.expect_exact("\r\n" + prompt)
    return child.before.replace("\r\n", "\n").strip()


def clean(s: str) -> str:  # the terminal passes control characters through; compare printable text
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", s).strip()


def test_chat_session_through_a_pty(tiny_model_dir, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(a)
    Image.effect_noise((48, 48), 60).convert("RGB").save(b)
    eng, s = Engine(tiny_model_dir), Sampling(max_new_tokens=N)

    def want(msgs, imgs):
        return eng.generate([(msgs, imgs)], s)[0]

    img_a, img_b = Image.open(a).convert("RGB"), Image.open(b).convert("RGB")
    t1 = [{"role": "user", "content": f"<image>\n{Q1}"}]
    w1 = want(t1, [img_a])
    w2 = want(t1 + [{"role": "assistant", "content": w1}, {"role": "user", "content": Q2}], [img_a])
    w3 = want(t1, [img_b])
    w4 = want([{"role": "user", "content": Q3}], [])

    child = spawn(tiny_model_dir)
    try:
        child.expect_exact("'stop' quits")
        child.expect_exact("User: ")
        child.sendline(str(a))
        child.expect(r"\[image .*a\.png loaded \(40x40\)")
        child.expect_exact("User: ")
        assert clean(ask(child, Q1)) == clean(w1)
        assert clean(ask(child, Q2)) == clean(w2)  # second turn sees the first (multi-turn history)
        child.sendline(str(b))  # a new image path switches images and starts a new conversation
        child.expect(r"\[image .*b\.png loaded \(48x48\)")
        child.expect_exact("User: ")
        assert clean(ask(child, Q1)) == clean(w3)
        child.sendline(str(tmp_path / "missing.png"))
        child.expect_exact("error:")
        child.expect_exact("image not found")
        child.expect_exact("User: ")
        child.sendline("clear")
        child.expect_exact("[conversation cleared]")
        child.expect_exact("User: ")
        assert clean(ask(child, Q3)) == clean(w4)  # text-only turn after clear
        child.sendline("stop")
        child.expect_exact("bye")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_in_chinese_and_eof(tiny_model_dir, tmp_path):
    img = tmp_path / "w.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(img)
    child = spawn(tiny_model_dir, "--lang", "zh", "--image", str(img))
    try:
        child.expect_exact("输入 stop 退出")
        child.expect_exact("已加载图像")
        child.expect_exact("用户：")
        assert isinstance(ask(child, "这张晶圆图显示了什么缺陷模式？", "用户：", "模型："), str)
        child.sendeof()  # Ctrl-D quits like 'stop'
        child.expect_exact("再见")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_bad_options_one_line(tmp_path, capsys):
    from domainvlm.cli import main

    assert main(["chat", "--model", str(tmp_path), "--top-p", "0"]) == 2
    err = capsys.readouterr().err
    assert "--top-p" in err and len(err.strip().splitlines()) == 1
    assert main(["chat", "--model", str(tmp_path / "nope")]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_chat_bad_image_option_exits_2_before_loading_the_model(tmp_path, capsys):
    from domainvlm.cli import main

    # the model folder does not exist either: the image must be checked first, and be the one error
    assert main(["chat", "--model", str(tmp_path / "nope"), "--image", str(tmp_path / "gone.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone.png: image not found" in err[0]


def test_image_ref_takes_map_file_wafer_refs(tmp_path):
    from domainvlm.commands.chat import image_ref

    (tmp_path / "lot42.xml").write_text("<Maps/>")
    assert image_ref(f"{tmp_path}/lot42.xml#3") == f"{tmp_path}/lot42.xml#3"  # was sent as a question
    assert image_ref(f"'{tmp_path}/lot42.xml#12'") == f"{tmp_path}/lot42.xml#12"
    assert image_ref(f"{tmp_path}/maps.npz#3") == f"{tmp_path}/maps.npz#3"  # missing, but clearly a path
    assert image_ref("lot43.xml#3") == "lot43.xml#3"  # a typo gets 'not found', not an answer
    assert image_ref("What is defect #3?") is None and image_ref("What defect is this?") is None


def test_question_with_the_image_token_is_refused_and_chat_goes_on(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import io

    from domainvlm.cli import main

    img = tmp_path / "w.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(img)
    monkeypatch.setattr(sys, "stdin", io.StringIO("<image> what?\nHello there\nstop\n"))
    assert main(["chat", "--model", str(tiny_model_dir), "--image", str(img), "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "error: the question may not contain the reserved token '<image>'" in out
    assert "ValueError" not in out and out.count("Model: ") == 1  # the next question is answered
