"""The LLaMA-Factory bench runner's dataset: the records' system turn must reach LLaMA-Factory as its system
prompt (not as a turn, which breaks its user/assistant alternation and drops every sample)."""

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from train_lora_bench import make_data  # noqa: E402
from train_lora_lf import write_dataset  # noqa: E402


def test_system_turn_is_declared_to_llamafactory(tmp_path):
    data = make_data(tmp_path / "d", 3, 28, system="You are a helpful assistant.")
    rec = json.loads(data.read_text().splitlines()[0])
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]
    name = write_dataset(data, tmp_path / "lf")
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())[name]
    assert info["tags"]["system_tag"] == "system"  # LLaMA-Factory's default is dropped once "tags" is given
    rows = json.loads((tmp_path / "lf" / info["file_name"]).read_text())
    assert rows[0]["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert all(Path(p).is_file() for r in rows for p in r["images"])


def test_no_system_turn_by_default(tmp_path):
    data = make_data(tmp_path / "d", 2, 28)
    assert all(json.loads(x)["messages"][0]["role"] == "user" for x in data.read_text().splitlines())
