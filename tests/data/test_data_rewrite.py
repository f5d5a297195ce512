"""`domainvlm data rewrite` end to end against a local fake OpenAI-compatible server: translation keeps the
original text, answers are cached (a rerun makes no call) and resumable, 429/500/malformed replies are retried,
failures are reported per record, an unreachable endpoint fails every record cleanly, output is atomic."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from domainvlm.cli import main


class Fake:
    """Replies 'ZH<text>'; text with RATE429 is refused once with 429, FLAKY500 once with 500, BROKEN always
    gets a malformed body, DOWN always a 503. Records every call."""

    def __init__(self):
        self.calls = Counter()
        self.seen = Counter()
        self.keys = []
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.keys.append(self.headers.get("Authorization"))
                text = body["messages"][-1]["content"]
                system = body["messages"][0]["content"]
                fake.calls[text] += 1
                n = fake.calls[text]
                if ("RATE429" in text and n == 1) or "DOWN" in text:
                    return self._send(429 if "RATE429" in text else 503, {"error": {"message": "slow down"}},
                                      {"Retry-After": "0"})
                if "FLAKY500" in text and n == 1:
                    return self._send(500, {"error": {"message": "oops"}})
                if "BROKEN" in text:
                    return self._send(200, None, raw=b"<html>not json")
                if "JSON" in system:  # the qa task
                    reply = json.dumps([{"question": f"Q about {text[:10]}?", "answer": "A."}])
                    if "BADQA" in text and n == 1:
                        reply = "sure! here are some questions"
                else:
                    reply = "ZH" + text
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": reply}}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

            def _send(self, status, obj, headers=None, raw=None):
                data = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake():
    f = Fake()
    yield f
    f.server.shutdown()


def records(tmp_path, answers):
    rows = [{"id": f"r{i}", "images": ["m.png"], "labels": {"task": "wafer"},
             "messages": [{"role": "user", "content": "<image>\nWhat defect?"},
                          {"role": "assistant", "content": a}]} for i, a in enumerate(answers)]
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def run(fake_url, inp, out, task="translate-zh", *extra):
    return main(["data", "rewrite", str(inp), "--out", str(out), "--endpoint", fake_url, "--model", "m", "--task",
                 task, "--backoff", "0", "--retries", "2", "--concurrency", "4", "--no-progress", *extra])


def test_translate_keeps_originals_counts_tokens_and_caches(fake, tmp_path, capsys, monkeypatch):
    inp = records(tmp_path, ["Diagnosis: Center", "Diagnosis: Scratch RATE429", "Edge FLAKY500"])
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv("MY_KEY", "sk-test")
    assert run(fake.url, inp, out, "translate-zh", "--api-key-env", "MY_KEY") == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in got] == ["r0-zh", "r1-zh", "r2-zh"]
    assert got[0]["messages"][0]["content"] == "<image>\nZHWhat defect?"  # the image slot stays in place
    assert got[1]["messages"][1]["content"] == "ZHDiagnosis: Scratch RATE429"
    assert got[2]["meta"]["original_messages"][1]["content"] == "Edge FLAKY500" and got[2]["meta"]["lang"] == "zh"
    assert fake.calls["Diagnosis: Scratch RATE429"] == 2 and fake.calls["Edge FLAKY500"] == 2  # retried once
    assert fake.calls["What defect?"] == 1  # the same question in three records: one call
    assert stats["calls"] == 4 and stats["failed"] == 0 and stats["completion_tokens"] == 5 * 6
    assert set(fake.keys) == {"Bearer sk-test"}
    before = sum(fake.calls.values())
    assert run(fake.url, inp, out) == 0  # rerun: everything comes from the cache
    assert sum(fake.calls.values()) == before
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cached"] == 4


def test_failures_are_reported_per_record_and_a_rerun_resumes(fake, tmp_path, capsys):
    inp = records(tmp_path, ["fine one", "BROKEN reply", "DOWN here", "fine two"])
    out = tmp_path / "out.jsonl"
    assert run(fake.url, inp, out) == 1
    err = capsys.readouterr().err
    assert "2 record(s) failed" in err
    errors = {e["id"]: e["error"] for e in map(json.loads, (tmp_path / "out.jsonl.errors.jsonl").read_text()
                                                 .splitlines())}
    assert set(errors) == {"r1", "r2"}
    assert "malformed reply" in errors["r1"] and "HTTP 503" in errors["r2"] and "3 attempt(s)" in errors["r2"]
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["r0-zh", "r3-zh"]
    calls = sum(fake.calls.values())
    assert run(fake.url, inp, out) == 1  # resumes: only the two failed texts are asked again
    assert sum(fake.calls.values()) - calls == 2 * 3


def test_qa_task_retries_a_malformed_reply(fake, tmp_path, capsys):
    inp = records(tmp_path, ["Diagnosis: Center BADQA"])
    out = tmp_path / "qa.jsonl"
    assert run(fake.url, inp, out, "qa") == 0
    rec = json.loads(out.read_text())
    assert rec["messages"][:2] == rec["meta"]["original_messages"] and len(rec["messages"]) == 4
    assert rec["messages"][2] == {"role": "user", "content": "Q about Diagnosis:?"}
    assert fake.calls["Diagnosis: Center BADQA"] == 2


def test_unreachable_endpoint_fails_each_record_and_writes_no_partial_file(tmp_path, capsys):
    inp = records(tmp_path, ["a", "b"])
    out = tmp_path / "out.jsonl"
    assert run("http://127.0.0.1:9/v1", inp, out, "paraphrase", "--retries", "1") == 1
    errors = [json.loads(x) for x in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == ["r0", "r1"] and all("unreachable" in e["error"] for e in errors)
    assert out.read_text() == ""  # written atomically, with the records that succeeded: none
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl")]  # no temp file left


@pytest.mark.parametrize("argv,msg", [
    (["--api-key-env", "NOPE_NOT_SET"], "NOPE_NOT_SET is not set"),
    (["--task", "summarise"], "invalid choice"),
])
def test_bad_options_are_one_line(tmp_path, capsys, argv, msg, monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    inp = records(tmp_path, ["a"])
    assert main(["data", "rewrite", str(inp), "--out", str(tmp_path / "o.jsonl"), "--endpoint", "http://x/v1",
                 "--model", "m", "--task", "paraphrase", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_translated_report_records_are_scored_in_the_new_language(fake, tmp_path, capsys):
    """XrayGLM's workflow: English reports translated to Chinese. labels.report (eval's reference) and
    labels.lang followed the messages only in meta: eval scored the Chinese answers against English text."""
    rec = {"id": "CXR1", "images": ["a.png"],
           "messages": [{"role": "user", "content": "<image>\nDescribe."},
                        {"role": "assistant", "content": "Heart normal. No acute disease."},
                        {"role": "user", "content": "What is the impression?"},
                        {"role": "assistant", "content": "No acute disease."}],
           "labels": {"task": "report", "report": "Heart normal. No acute disease.", "findings": "Heart normal.",
                      "impression": "No acute disease.", "lang": "en"}, "meta": {"lang": "en"}}
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(rec) + "\n")
    out = tmp_path / "out.jsonl"
    assert run(fake.url, inp, out, "translate-zh") == 0
    got = json.loads(out.read_text())
    assert got["labels"]["report"] == got["messages"][1]["content"] == "ZHHeart normal. No acute disease."
    assert got["labels"]["lang"] == "zh" and got["labels"]["impression"] == "ZHNo acute disease."
    assert got["labels"]["findings"] is None  # never sent on its own: no stale English left behind
    assert run(fake.url, inp, tmp_path / "p.jsonl", "paraphrase") == 0
    para = json.loads((tmp_path / "p.jsonl").read_text())
    assert para["labels"]["report"] == para["messages"][1]["content"] and para["labels"]["lang"] == "en"
