"""The ms-swift bench runner's dataset: our records in ms-swift's standard messages + images format (runs
without ms-swift installed: the runner imports it only inside ``run_swift``)."""

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from train_lora_bench import LORA, VARIANTS, make_data  # noqa: E402
from train_lora_swift import swift_args, write_dataset  # noqa: E402


def test_records_become_swift_messages_with_absolute_images(tmp_path):
    data = make_data(tmp_path / "d", 3, 28, system="You are a helpful assistant.")
    src = [json.loads(x) for x in data.read_text().splitlines()]
    path = write_dataset(data, tmp_path / "sw")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == 3
    for r, s in zip(rows, src):
        assert set(r) == {"messages", "images"}  # ids and labels are not ms-swift columns
        assert r["messages"] == s["messages"]  # system turn kept as ms-swift's system message
        assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
        assert r["messages"][1]["content"].count("<image>") == len(r["images"]) == 1
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in r["images"])


def test_no_system_turn_by_default(tmp_path):
    path = write_dataset(make_data(tmp_path / "d", 2, 28), tmp_path / "sw")
    assert all(json.loads(x)["messages"][0]["role"] == "user" for x in path.read_text().splitlines())


def test_same_budget_as_the_other_runners(tmp_path):
    a = swift_args(tmp_path / "base", tmp_path / "b.jsonl", tmp_path / "out", dict(VARIANTS["swift"][1]), 8, 13, 4,
                   LORA, cuda=True)
    assert (a["lora_rank"], a["lora_alpha"], a["lora_dropout"]) == (16, 32, 0.05)
    assert a["target_modules"] == LORA["targets"] and a["freeze_vit"] and a["freeze_aligner"]
    assert (a["max_length"], a["per_device_train_batch_size"], a["gradient_accumulation_steps"]) == (1024, 8, 1)
    assert a["bf16"] and a["torch_dtype"] == "bfloat16" and a["attn_impl"] == "sdpa"
    assert a["use_liger_kernel"] and not a["gradient_checkpointing"] and not a["packing"]
    assert not a["check_model"] and a["split_dataset_ratio"] == 0  # no hub call, every record trains
    packed = swift_args(tmp_path / "base", tmp_path / "b.jsonl", tmp_path / "out", dict(VARIANTS["swift_packing"][1]),
                        8, 13, 4, LORA, cuda=True)
    assert packed["packing"] and packed["attn_impl"] == "flash_attn"  # ms-swift refuses packing without it
    cpu = swift_args(tmp_path / "base", tmp_path / "b.jsonl", tmp_path / "out", {}, 2, 3, 0, LORA, cuda=False)
    assert cpu["use_cpu"] and not cpu["bf16"] and not cpu["use_liger_kernel"]
