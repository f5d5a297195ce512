"""Tuning options change exactly the parameters they name, for tiny Qwen2-VL, Qwen2.5-VL and LLaVA bases."""

from __future__ import annotations

import re

import pytest
import torch

from domainvlm.config import from_dict
from domainvlm.errors import UserError
from domainvlm.models.tiny import FAMILIES, build_tiny
from domainvlm.train.config import TrainConfig
from domainvlm.train.tuning import apply_memory_options, apply_tuning, count_by_part, part_of

R = 4
LM_LINEAR = re.compile(r"language_model\.layers\.(\d+)\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj$")


def make_cfg(**kw) -> TrainConfig:
    d: dict = {}
    for k, v in kw.items():  # lora__r=4 -> {"lora": {"r": 4}}
        node, parts = d, k.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    d.setdefault("lora", {}).setdefault("r", R)
    return from_dict(TrainConfig, d)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-bases")
    return {f: build_tiny(f, root / f)[0] for f in FAMILIES}


def fresh(bases, family):
    import copy

    return copy.deepcopy(bases[family])


def part_sizes(model) -> dict:
    return {p: t for p, (_, t) in count_by_part(model).items()}


def lora_size(model, pattern, layers=None) -> int:
    """Independent count: r * (in + out) over the linears a LoRA config should hit."""
    n = 0
    for name, m in model.named_modules():
        hit = pattern(name, m)
        if hit and (layers is None or int(LM_LINEAR.search(name).group(1)) in layers):
            n += R * (m.in_features + m.out_features)
    return n


def is_lm_target(name, m):
    return bool(LM_LINEAR.search(name))


def is_vision_linear(name, m):
    return isinstance(m, torch.nn.Linear) and part_of(name) == "vision"


@pytest.mark.parametrize("family", FAMILIES)
def test_full_and_freeze_options(bases, family):
    sizes = part_sizes(bases[family])
    assert all(sizes[p] > 0 for p in ("vision", "projector", "lm"))
    m = apply_tuning(fresh(bases, family), make_cfg())
    assert count_by_part(m) == {p: (s, s) for p, s in sizes.items()}
    m = apply_tuning(fresh(bases, family), make_cfg(train_vision=False))
    assert count_by_part(m) == {"vision": (0, sizes["vision"]), "projector": (sizes["projector"],) * 2,
                                "lm": (sizes["lm"],) * 2}
    m = apply_tuning(fresh(bases, family), make_cfg(stage="align"))  # projector only
    assert count_by_part(m) == {"vision": (0, sizes["vision"]), "projector": (sizes["projector"],) * 2,
                                "lm": (0, sizes["lm"])}
    m = apply_tuning(fresh(bases, family), make_cfg(train_projector=False, train_lm=False))
    assert count_by_part(m)["vision"] == (sizes["vision"],) * 2 and count_by_part(m)["lm"][0] == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_options(bases, family):
    base = bases[family]
    sizes = part_sizes(base)
    lm_lora = lora_size(base, is_lm_target)
    m = apply_tuning(fresh(bases, family), make_cfg(mode="lora"))
    c = count_by_part(m)
    assert c["lm"][0] == lm_lora > 0 and c["vision"][0] == 0 and c["projector"][0] == 0
    m = apply_tuning(fresh(bases, family), make_cfg(mode="lora", lora__layers="1"))
    assert count_by_part(m)["lm"][0] == lora_size(base, is_lm_target, layers={1}) == lm_lora // 2
    assert all(".layers.1." in n for n, p in m.named_parameters() if p.requires_grad)
    m = apply_tuning(fresh(bases, family), make_cfg(mode="lora", lora__layers="-1--1"))  # last layer
    assert all(".layers.1." in n for n, p in m.named_parameters() if p.requires_grad)
    m = apply_tuning(fresh(bases, family), make_cfg(mode="lora", lora__vision=True))
    c = count_by_part(m)
    assert c["vision"][0] == lora_size(base, is_vision_linear) > 0 and c["lm"][0] == lm_lora
    assert c["projector"][0] == 0
    m = apply_tuning(fresh(bases, family), make_cfg(mode="lora", train_projector=True))
    c = count_by_part(m)
    assert c["projector"][0] == sizes["projector"] and c["lm"][0] == lm_lora and c["vision"][0] == 0
    m = apply_tuning(fresh(bases, family), make_cfg(mode="lora", train_vision=True))
    c = count_by_part(m)
    assert c["vision"][0] == sizes["vision"] and c["lm"][0] == lm_lora and c["projector"][0] == 0


@pytest.mark.parametrize("family,opts", [
    ("qwen2_vl", dict(mode="lora", train_projector=True, lora__layers="0")),
    ("qwen2_5_vl", dict(mode="lora", lora__vision=True)),
    ("llava", dict(mode="full", train_vision=False)),
])
def test_training_steps_change_exactly_the_trainable_weights(bases, family, opts):
    from domainvlm.models.chat_format import encode_train
    from domainvlm.models.tiny import config_and_processor
    from PIL import Image

    _, proc = config_and_processor(family)
    model = apply_tuning(fresh(bases, family), make_cfg(lora__dropout=0.0, **opts))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    msgs = [{"role": "user", "content": "<image>\nDescribe."}, {"role": "assistant", "content": "Heart size is normal."}]
    batch = encode_train(proc, msgs, [Image.new("RGB", (40, 40), (200, 30, 90))])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # LoRA's B starts at zero, so A only gets a gradient from the second step on
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == p.requires_grad, f"{n}: changed={changed} trainable={p.requires_grad}"


def test_gradient_checkpointing_fraction(bases):
    m = apply_tuning(fresh(bases, "qwen2_vl"), make_cfg(mode="lora", gradient_checkpointing=0.5))
    apply_memory_options(m, make_cfg(gradient_checkpointing=0.5))
    flags = [mod.gradient_checkpointing for n, mod in m.named_modules() if re.search(r"language_model\.layers\.\d+$", n)]
    assert flags == [True, False]
    vis = [mod.gradient_checkpointing for n, mod in m.named_modules() if re.search(r"visual\.blocks\.\d+$", n)]
    assert vis and not any(vis)  # frozen vision tower: nothing to recompute
    with pytest.raises(UserError, match="gradient_checkpointing"):
        apply_memory_options(m, make_cfg(gradient_checkpointing=2))


@pytest.mark.parametrize("opts,msg", [
    (dict(mode="lora", lora__target_modules=["q_proj", "qkv_projection"]), "no module named qkv_projection"),
    (dict(mode="lora", lora__layers="5-9"), "outside the language model's 2 layers"),
    (dict(mode="lora", lora__layers="one"), "cannot read 'one'"),
    (dict(mode="full", quantization="4bit"), "use mode=lora"),
    (dict(mode="lora", stage="align"), "stage"),
    (dict(mode="lora", train_lm=True), "train_lm"),
    (dict(mode="lora", lora__lm=False), "no module would get an adapter"),
    (dict(train_vision=False, train_projector=False, train_lm=False), "nothing would be trained"),
    (dict(mode="prefix"), "unknown tuning mode"),
    (dict(stage="pretrain"), "unknown stage"),
])
def test_bad_options_give_one_clear_error(bases, opts, msg):
    with pytest.raises(UserError, match=msg):
        apply_tuning(fresh(bases, "qwen2_vl"), make_cfg(**opts))


def test_init_adapter_continues_an_adapter_and_rejects_a_foreign_one(bases, tmp_path):
    """Stage 2 of a two-stage recipe may continue stage 1's adapter: exactly its LoRA weights train again."""
    first = apply_tuning(fresh(bases, "qwen2_vl"), make_cfg(mode="lora", lora__layers="0", train_projector=True))
    first.save_pretrained(tmp_path / "stage1")
    want = count_by_part(first)
    m = apply_tuning(fresh(bases, "qwen2_vl"), make_cfg(mode="lora", init_adapter=str(tmp_path / "stage1")))
    got = count_by_part(m)
    assert got == want and got["projector"][0] > 0 and got["lm"][0] > 0
    with pytest.raises(UserError, match="adapter was trained on|adapter for another base"):
        apply_tuning(fresh(bases, "llava"), make_cfg(mode="lora", init_adapter=str(tmp_path / "stage1")))
    with pytest.raises(UserError, match="no adapter_config.json"):
        apply_tuning(fresh(bases, "llava"), make_cfg(mode="lora", init_adapter=str(tmp_path)))


def test_parameter_counts_unpack_4bit_weights(bases):
    """bitsandbytes' Params4bit holds two 4-bit weights per uint8 element: its numel() is half the weights
    (QLoRA's printed and logged totals were short by that). A stand-in of that class, not bitsandbytes itself."""
    from domainvlm.train.tuning import count_trainable

    class Params4bit(torch.nn.Parameter):  # matched by class name, as peft's get_nb_trainable_parameters does
        pass

    m = fresh(bases, "qwen2_vl")
    before = count_trainable(m)
    w = m.model.language_model.layers[0].mlp.down_proj
    n = w.weight.numel()
    w.weight = Params4bit(torch.zeros(n // 2, 1, dtype=torch.uint8), requires_grad=False)  # as bnb packs it
    assert count_trainable(m) == (before[0] - n, before[1])
    assert sum(t for _, t in count_by_part(m).values()) == before[1]
    from domainvlm.train.tuning import n_weights

    packed = Params4bit(torch.zeros(8, 1, dtype=torch.uint8), requires_grad=False)  # 16 weights
    assert n_weights(packed) == 16 and n_weights(torch.nn.Parameter(torch.zeros(3, 5))) == 15
