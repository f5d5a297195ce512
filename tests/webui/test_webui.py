"""`domainvlm webui` in real headless Chromium (Debian package, driven by Playwright): upload, ask, read."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from domainvlm.inference.engine import Engine, Sampling

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # the server start-up helpers' folder
from test_serve import free_port, start, stop  # noqa: E402 - shared server start-up helpers

ROOT = Path(__file__).resolve().parents[2]
N = 6
Q1, Q2 = "What defect pattern does this wafer map show?", "What are the likely causes?"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Loaded into the web UI process: records every connection to a non-loopback address.
NET_GUARD = '''
import os, socket
_connect = socket.socket.connect
def connect(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6) and addr[0] not in ("127.0.0.1", "::1", "localhost"):
        with open(os.environ["NET_GUARD_LOG"], "a") as fh:
            fh.write(f"{addr}\\n")
    return _connect(self, addr)
socket.socket.connect = connect
'''


def find_chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    script = ROOT / "scripts" / "test-system-deps.sh"
    if not found and os.access(script, os.X_OK):
        subprocess.run([str(script)], check=False, timeout=900)  # installs chromium when it can
        found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium not found and scripts/test-system-deps.sh could not install it "
                    "(needs root or sudo and apt-get)")
    return found


def clean(s: str) -> str:  # the browser drops control characters and collapses whitespace
    return " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", s).split())


@pytest.fixture(scope="module")
def webui(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webui")
    (tmp / "guard").mkdir()
    (tmp / "guard" / "sitecustomize.py").write_text(NET_GUARD)
    port = free_port()
    env = {"PYTHONPATH": str(tmp / "guard"), "NET_GUARD_LOG": str(tmp / "net.log"),
           "XDG_CACHE_HOME": str(tmp / "cache"), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    os.environ.update(env)  # start() passes os.environ on; undone below
    try:
        proc = start([sys.executable, "-m", "domainvlm", "webui", "--model", str(tiny_model_dir), "--port",
                      str(port), "--max-new-tokens", str(N)], f"http://127.0.0.1:{port}/", tmp / "webui.log")
    finally:
        for k in env:
            os.environ.pop(k)
    yield {"url": f"http://127.0.0.1:{port}/", "net_log": tmp / "net.log", "log": tmp / "webui.log"}
    stop(proc)


def wait_text(page, selector: str, index: int, want: str, timeout: float = 60) -> str:
    """Poll a streamed chat bubble until it shows ``want`` (or time out with what it shows)."""
    loc, got = page.locator(selector), None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if loc.count() > index:
            got = clean(loc.nth(index).inner_text())
            if got == clean(want):
                return got
        time.sleep(0.2)
    return got


def diagnose(page, webui, artifacts_dir) -> str:
    """What the page and the server showed, for a failure message (the CI log is all we get)."""
    page.screenshot(path=str(artifacts_dir / "webui-failure.png"), full_page=True)
    q = page.locator("#question textarea").input_value()
    n_user, n_bot = (page.locator(f"#chatbot [data-testid={r}]").count() for r in ("user", "bot"))
    log = webui["log"].read_text(errors="replace")[-1500:] if webui["log"].exists() else "(no log)"
    return f"question box={q!r}, user bubbles={n_user}, bot bubbles={n_bot}; web UI log tail:\n{log}"


def test_webui_upload_ask_and_read_answer(webui, tiny_model_dir, tmp_path, artifacts_dir):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    chromium = find_chromium()
    img = tmp_path / "wafer.png"
    Image.effect_noise((48, 48), 80).convert("RGB").save(img)
    eng, s = Engine(tiny_model_dir), Sampling(max_new_tokens=N)
    pil = Image.open(img).convert("RGB")
    t1 = [{"role": "user", "content": f"<image>\n{Q1}"}]
    a1 = eng.generate([(t1, [pil])], s)[0]
    a2 = eng.generate([(t1 + [{"role": "assistant", "content": a1}, {"role": "user", "content": Q2}], [pil])], s)[0]

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(webui["url"], wait_until="domcontentloaded")
            page.wait_for_selector("#question textarea", timeout=60_000)
            assert page.locator("#image button[aria-label='Capture from camera']").count() == 1  # webcam source
            page.fill("#question textarea", Q1)  # typed first: choosing the image must not wipe it
            page.locator("#image input[type=file]").set_input_files(str(img))
            page.wait_for_selector("#image img", timeout=30_000)
            assert page.locator("#question textarea").input_value() == Q1
            page.click("#send")
            got = wait_text(page, "#chatbot [data-testid=bot]", 0, a1, timeout=120)
            assert got == clean(a1), diagnose(page, webui, artifacts_dir)
            page.fill("#question textarea", Q2)
            page.press("#question textarea", "Enter")  # second turn: Enter submits, history is kept
            got = wait_text(page, "#chatbot [data-testid=bot]", 1, a2, timeout=120)
            assert got == clean(a2), diagnose(page, webui, artifacts_dir)
            assert clean(page.locator("#chatbot [data-testid=user]").nth(1).inner_text()) == Q2
            page.screenshot(path=str(artifacts_dir / "webui.png"), full_page=True)
            page.locator("[data-testid=dataset-cell-0-0]").click()  # an example: sets image + question
            page.wait_for_function("document.querySelector('#question textarea').value.length > 0")
            # a new image starts a new conversation (the reset runs as its own queued event)
            page.wait_for_function("document.querySelectorAll('#chatbot [data-testid=bot]').length == 0",
                                   timeout=30_000)
        finally:
            browser.close()
    assert (artifacts_dir / "webui.png").stat().st_size > 10_000
    net = webui["net_log"].read_text() if webui["net_log"].exists() else ""
    assert net == "", f"web UI made non-loopback connections:\n{net}"
    assert "Traceback" not in webui["log"].read_text()


def test_webui_share_flag_reaches_gradio(tiny_model_dir, monkeypatch, tmp_path):
    import gradio

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from domainvlm.cli import main

    seen = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kw: seen.update(kw, demo=self))
    assert main(["webui", "--model", str(tiny_model_dir), "--share", "--port", str(free_port()),
                 "--max-new-tokens", "4", "--max-upload-mb", "32"]) == 0
    from domainvlm.webui.image_box import ImageBox

    boxes = [b for b in seen["demo"].blocks.values() if isinstance(b, ImageBox)]
    assert [b.max_upload_bytes for b in boxes] == [32 << 20]
    assert seen["share"] is True and seen["server_name"] == "127.0.0.1"
    assert seen["max_file_size"] == 32 << 20  # gradio refuses larger uploads before our box sees them
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_webui_bad_options_one_line(tmp_path, capsys):
    from domainvlm.cli import main

    assert main(["webui", "--auth", "nopassword"]) == 2
    assert main(["webui", "--examples", str(tmp_path / "none")]) == 2
    assert main(["webui", "--max-upload-mb", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "--auth" in err[0] and "--examples" in err[1] and "--max-upload-mb" in err[2]


def test_webui_new_image_resets_chat_keeps_question_and_queues_in_order(tiny_model_dir, monkeypatch, tmp_path):
    """The reset a new image triggers leaves the question box alone and shares the answer's queue group,
    so it cannot land between typing and sending (the race behind a flaky CI run) or after the answer."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from domainvlm.webui.app import build_demo

    demo = build_demo(Engine(tiny_model_dir))
    events = {(fn.name, trigger[1]): fn for fn in demo.fns.values() for trigger in fn.targets}
    outputs = {k: [getattr(o, "elem_id", None) or type(o).__name__ for o in fn.outputs] for k, fn in events.items()}
    assert outputs[("new_conversation", "change")] == ["chatbot", "State"]
    assert outputs[("reset", "click")] == ["chatbot", "State", "question"]  # the Clear button still clears all
    assert {fn.concurrency_id for fn in events.values()} == {"chat"}
    assert set(events) == {("respond", "click"), ("respond", "submit"), ("reset", "click"),
                           ("new_conversation", "change"), ("show_map_file", "upload"),
                           ("show_map_file", "change"),  # the wafer domain's map-file box (Domain.extra)
                           ("show_evidence", "then")}  # after an answer: the head's evidence (none here)


def test_webui_question_with_the_image_token_is_a_clear_error(tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    import gradio as gr

    from domainvlm.webui.app import build_demo

    demo = build_demo(Engine(tiny_model_dir))
    respond = next(fn.fn for fn in demo.fns.values() if fn.name == "respond")
    img = Image.new("RGB", (32, 32), (10, 200, 30))
    with pytest.raises(gr.Error, match="reserved token '<image>'"):  # was 'generation failed: ValueError ...'
        list(respond("<image> what?", img, [], 4, 0.0, 1.0, 0))


def test_webui_an_image_sent_without_a_question(tiny_model_dir, tiny_wafer_head_dir, monkeypatch, tmp_path):
    """A head model answers its own question (the wafer diagnosis) about an image sent with an empty box; a
    model without a head waits for a question, as before."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from domainvlm.webui.app import build_demo

    img = Image.new("RGB", (32, 32), (10, 200, 30))
    for model, asked in ((tiny_wafer_head_dir, True), (tiny_model_dir, False)):
        demo = build_demo(Engine(model), Sampling(max_new_tokens=4))
        respond = next(fn.fn for fn in demo.fns.values() if fn.name == "respond")
        *_, (shown, history, _) = list(respond("", img, [], 4, 0.0, 1.0, 0))
        if asked:
            assert history[0]["content"] == "<image>\nWhat defect pattern does this wafer map show?"
            assert history[1]["role"] == "assistant" and history[1]["content"]
        else:
            assert history == [] and shown == []
        box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "question")
        assert ("What defect pattern" in box.placeholder) is asked


def test_webui_folder_examples_fill_only_the_image(tiny_model_dir, monkeypatch, tmp_path):
    """--examples DIR of chest X-rays: clicking one asked 'What defect pattern does this wafer map show?'."""
    import gradio

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from domainvlm.cli import main

    xr = tmp_path / "xrays"
    xr.mkdir()
    Image.new("L", (64, 64), 90).save(xr / "2_1.png")
    seen = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kw: seen.update(demo=self))
    assert main(["webui", "--model", str(tiny_model_dir), "--examples", str(xr), "--port", str(free_port()),
                 "--max-new-tokens", "4"]) == 0
    (ds,) = [b for b in seen["demo"].blocks.values() if isinstance(b, gradio.Dataset)]
    assert len(ds.samples) == 1 and len(ds.samples[0]) == 1  # the image only: the user asks the question
    assert "wafer" not in json.dumps(ds.samples)


def test_webui_domain_inputs_follow_the_models_head(tiny_wafer_head_dir, monkeypatch, tmp_path):
    """A steel-photo model's page showed the wafer-map file box and a 'wafer #K' field."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from domainvlm.inference import answer_heads
    from domainvlm.webui.app import build_demo

    def names(demo):
        return {fn.name for fn in demo.fns.values()}

    engine = Engine(tiny_wafer_head_dir)
    assert "show_map_file" in names(build_demo(engine))  # a wafer model: its domain's map-file box
    monkeypatch.setattr(answer_heads, "head_name", lambda model: "classify")
    assert "show_map_file" not in names(build_demo(engine))
