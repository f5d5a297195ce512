"""Shared test fixtures. Real data lives in ../shared/data beside the checkout; tests using it skip cleanly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DOMAINVLM_SHARED_DATA", ROOT.parent / "shared" / "data"))
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


TINY = dict(image_size=32, patch_size=4, merge_size=2, vision_dim=32, vision_depth=1, vision_heads=2,
            hidden=64, layers=2, heads=2, kv_heads=1, intermediate=128, vocab_size=600, max_position=1024)


def build_tiny_compact(out_dir: Path, seed: int = 0):
    """An untrained tiny compact model folder (fast to build; outputs are arbitrary but well-formed)."""
    from domainvlm.domains.wafer.instruct import QUESTIONS
    from domainvlm.domains.wafer.knowledge import answer
    from domainvlm.domains.wafer.patterns import PATTERNS
    from domainvlm.models.compact import CompactConfig, build_compact

    corpus = [answer((p,), lang) for p in PATTERNS for lang in ("en", "zh")] + QUESTIONS["en"] + QUESTIONS["zh"]
    build_compact(out_dir, corpus * 3, CompactConfig(**TINY), seed=seed)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Session-wide untrained tiny compact model (Qwen2-VL architecture) for interface tests."""
    return build_tiny_compact(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def tiny_wafer_head_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A copy of the tiny model whose config names the wafer diagnosis head (calibration, structured answers)."""
    import json
    import shutil

    d = tmp_path_factory.mktemp("tiny-wafer-head") / "model"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.setdefault("domainvlm", {})["answer_head"] = "wafer-diagnosis"
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture
def one_error_line(capsys):
    """Read what a command wrote to stderr, asserting it is one line (a user mistake's message), and return it."""
    def read() -> str:
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        return err[0]
    return read


@pytest.fixture(scope="session")
def fab_model(tiny_wafer_head_dir, tmp_path_factory) -> Path:
    """The tiny wafer-head model, its taxonomy.json the 8 patterns extended by configs/fab-patterns.yaml."""
    import shutil

    from domainvlm.domains.wafer.taxonomy import default
    from domainvlm.taxonomy import extend

    d = tmp_path_factory.mktemp("fab-model") / "model"
    shutil.copytree(tiny_wafer_head_dir, d)
    extend(default(), Path(__file__).resolve().parents[1] / "configs" / "fab-patterns.yaml").save(d)
    return d
