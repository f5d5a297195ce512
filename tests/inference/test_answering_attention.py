"""inference/attention.py: answering on a GPU leaves SDPA's cuDNN backend out (a plan per new shape), only there."""

import contextlib

import torch

from domainvlm.inference.attention import answering_attention


def test_cuda_answers_run_without_cudnn_attention_and_restore_it_afterwards():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with answering_attention(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with answering_attention("cuda:0"):  # a device string names the same kind
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_cpu_answers_change_no_backend():
    flags = lambda: (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled())  # noqa: E731
    before = flags()
    with answering_attention(torch.device("cpu")), answering_attention("cpu"):
        assert flags() == before


def test_engine_generate_answers_inside_it(tiny_model_dir, monkeypatch):
    from domainvlm.inference import engine as engine_mod

    seen = []

    def record(device):
        seen.append(str(device))
        return contextlib.nullcontext()

    monkeypatch.setattr(engine_mod, "answering_attention", record)
    eng = engine_mod.Engine(tiny_model_dir, device="cpu")
    eng.generate([([{"role": "user", "content": "hello"}], [])], engine_mod.Sampling(max_new_tokens=2))
    assert seen == ["cpu"]
