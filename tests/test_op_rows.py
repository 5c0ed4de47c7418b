"""Every op of every Hugging Face model is a record of its own, the same on every backend.

Since transformers 5 a Hugging Face model cannot be traced by FX, so it runs as one whole-model leaf and
each torch-level call inside it is a record (:mod:`torch_flops.op_capture`). For ten small models
(2 layers, hidden 64, 4 heads, vocab 1000; random weights, nothing downloaded) this checks that the
records cover the whole cost under real modules, nothing is unsupported, every module that ran is timed,
eager and SDPA attention cost the same up to the mask bookkeeping written out below as arithmetic, a
shape-only run gives the same records as a real one and the output is the model's own.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

from features import needs_transformers_5
from test_transformers import MODELS as TRACED_MODELS, B, L, T, tokens
from torch_flops import TorchFLOPsByFX

pytestmark = [pytest.mark.usefixtures("one_thread"), needs_transformers_5]  # conftest.py

SMALL = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=1000)
LAYERS, HEADS = 2, 4
WINDOW = 8  # Mistral's sliding window, smaller than the L = 16 tokens


def clip_config() -> Any:
    vision = {k: v for k, v in SMALL.items() if k != "vocab_size"}
    return T.CLIPConfig(text_config=SMALL, vision_config={**vision, "image_size": 64, "patch_size": 16},
                        projection_dim=32)


MODELS: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[], dict[str, torch.Tensor]]]] = {
    **{name: TRACED_MODELS[name] for name in ("gpt2", "bert", "llama", "t5", "whisper", "vit")},
    "mistral": (lambda: T.MistralForCausalLM(T.MistralConfig(**SMALL, num_key_value_heads=2, sliding_window=WINDOW)),
                tokens),
    "qwen2": (lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**SMALL, num_key_value_heads=2)), tokens),
    "gemma": (lambda: T.GemmaForCausalLM(T.GemmaConfig(**SMALL, num_key_value_heads=2, head_dim=16)), tokens),
    "clip": (lambda: T.CLIPModel(clip_config()), lambda: {**tokens(), "pixel_values": torch.rand(B, 3, 64, 64)}),
}

# one projection per model: (the end of its module path, the function it calls)
PROJECTIONS = {
    "gpt2": ("attn.c_attn", "torch.addmm"),  # transformers' Conv1D: addmm(bias, x, weight)
    "bert": ("attention.self.query", "torch.nn.functional.linear"),
    "t5": ("SelfAttention.q", "torch.nn.functional.linear"),
    "vit": ("attention.q_proj", "torch.nn.functional.linear"),
}

# -- eager minus SDPA: mask bookkeeping only (docs/conventions.md, "Eager and SDPA attention ...") ------
# The attention itself costs the same on both paths: eager's matmul, scaling mul, mask add, softmax and
# matmul are the parts the SDPA rule prices (is_causal=True is priced like a mask). What differs is how
# the mask is made.
#
# A causal model given an all-ones attention_mask (GPT-2, Llama, Qwen2, Gemma, CLIP's text model):
# eager builds a float mask: the query and key index aranges shifted by their offsets (two adds of L),
# causal `kv <= q` (L*L), `True & causal` and `& padding` (and_masks: L*L and B*L*L), then
# torch.where(mask, 0, min) (B*L*L). SDPA instead checks that the padding mask is all ones
# (fast_all: sum of B*L values, B*L - 1 adds, and one ==), then passes no mask but is_causal=True.
CAUSAL_MASK = (2 * L + L * L + L * L + B * L * L + B * L * L) - ((B * L - 1) + 1)  # 1568 - 32 = 1536
# T5's decoder (no decoder mask given, D = 8 tokens): eager builds the causal mask (two adds of D, kv <= q
# D*D, where B*D*D) and each decoder self-attention adds position bias and mask separately (a second
# B*H*D*D add); with SDPA each decoder self-attention folds the causal mask into the position bias
# instead (`ge` D*D, where H*D*D) and the SDPA call prices one mask add.
D = 8  # decoder tokens of T5 and Whisper
T5_DECODER_MASK = 2 * D + D**2 + B * D**2  # 16 + 64 + 128 = 208
T5_SELF_ATTENTION = B * HEADS * D**2 - (D**2 + HEADS * D**2)  # 512 - (64 + 256) = 192 per decoder layer
T5_MASK = T5_DECODER_MASK + LAYERS * T5_SELF_ATTENTION  # 208 + 2 * 192 = 592
# Whisper's decoder (batch 1, D = 8, no decoder mask): eager builds the causal mask (two adds of D,
# kv <= q D*D, where 1*D*D); SDPA passes is_causal=True and builds nothing.
WHISPER_MASK = 2 * D + D**2 + 1 * D**2  # 16 + 64 + 64 = 144
# Mistral with a sliding window shorter than the sequence: SDPA cannot skip the mask, so both paths build
# the same boolean mask; eager turns it into a float one once (where, B*L*L), while each of the LAYERS
# SDPA calls is given the boolean mask and is charged its conversion (mask.numel() = B*1*L*L selects).
MISTRAL_WHERE, MISTRAL_CONVERSION = B * L * L, B * L * L  # 512 in the model, 512 in each SDPA call
MISTRAL_MASK = MISTRAL_WHERE - LAYERS * MISTRAL_CONVERSION  # 512 - 2 * 512 = -512
EAGER_MINUS_SDPA = {
    "gpt2": CAUSAL_MASK, "llama": CAUSAL_MASK, "qwen2": CAUSAL_MASK, "gemma": CAUSAL_MASK, "clip": CAUSAL_MASK,
    "t5": T5_MASK, "whisper": WHISPER_MASK, "mistral": MISTRAL_MASK,
    "bert": 0, "vit": 0,  # no mask made: BERT's all-ones padding mask is dropped on both paths, ViT has none
}
# where the differences are booked: eager minus SDPA self FLOPs of each module that differs
CAUSAL_MASK_MODULE = {"gpt2": "transformer", "llama": "model", "qwen2": "model", "gemma": "model", "clip": "text_model"}
SELF_FLOPS_DIFFERENCES: dict[str, dict[str, int]] = {
    **{name: {path: CAUSAL_MASK} for name, path in CAUSAL_MASK_MODULE.items()},
    "t5": {"decoder": T5_DECODER_MASK,
           **{f"decoder.block.{i}.layer.0.SelfAttention": T5_SELF_ATTENTION for i in range(LAYERS)}},
    "whisper": {"model.decoder": WHISPER_MASK},
    "mistral": {"model": MISTRAL_WHERE, **{f"model.layers.{i}.self_attn": -MISTRAL_CONVERSION for i in range(LAYERS)}},
    "bert": {}, "vit": {},
}

# A shape-only run cannot take a branch that reads tensor values. transformers reads the attention mask's
# values to decide whether a mask can be skipped (SDPA's causal skip, and on both paths the bidirectional
# one of BERT and T5's encoder), so the shape-only comparison runs without an attention_mask (all ones
# anyway) — except GPT-2, whose forward reads input_ids (for pad tokens) when no attention_mask is given.
SHAPE_ONLY_SKIPS = {
    ("gpt2", "sdpa"): "GPT-2 reads input_ids without an attention_mask and the mask's values with one (SDPA's causal skip)",
}


@functools.lru_cache(maxsize=None)
def model_and_inputs(name: str, attention: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    build, make_inputs = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    model.set_attn_implementation(attention)
    return model, make_inputs()


@functools.lru_cache(maxsize=None)
def profiled(name: str, attention: str) -> tuple[TorchFLOPsByFX, Any]:
    """The counter after a timed run and the output it returned."""
    model, inputs = model_and_inputs(name, attention)
    counter = TorchFLOPsByFX(model)
    output = counter.propagate(**inputs, timing=True)
    return counter, output


def op_records(counter: TorchFLOPsByFX) -> list:
    return [r for r in counter.records if r.op not in ("placeholder", "output")]


def tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of a model output, in order (a cache object is skipped)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):  # ModelOutput too
        return [t for v in value.values() for t in tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors(v)]
    return []


ATTENTIONS = ["eager", "sdpa"]


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("name", list(MODELS))
def test_one_record_per_call_under_real_modules(name: str, attention: str) -> None:
    counter, _ = profiled(name, attention)
    model, inputs = model_and_inputs(name, attention)
    calls = op_records(counter)
    # the whole model is one leaf: every op record is a call inside it, and they make up all of the cost
    assert calls and all(r.leaf_node for r in calls)
    assert sum(r.flops for r in calls) == counter.total_flops > 0
    # a real submodule and its class; the root's own calls have class '' (as a traced root node has)
    modules = {path: type(module).__name__ if path else "" for path, module in model.named_modules()}
    assert {(r.module_path, r.module_class) for r in calls} <= set(modules.items())
    suffix, function = PROJECTIONS.get(name, ("self_attn.q_proj", "torch.nn.functional.linear"))
    table = counter.report("nodes")
    assert re.search(rf"\s{re.escape(function)}\s+\S*{re.escape(suffix)}\s", table), f"no {suffix} row calling {function}"
    # graph inputs: only those given or with a default that is not None
    defaults = inspect.signature(model.forward).parameters
    placeholders = [r.name for r in counter.records if r.op == "placeholder"]
    assert set(inputs) <= set(placeholders)
    assert all(p in inputs or defaults[p].default is not None for p in placeholders)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("name", list(MODELS))
def test_nothing_unsupported(name: str, attention: str) -> None:
    counter, _ = profiled(name, attention)
    assert counter.unsupported == []


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("name", list(MODELS))
def test_every_module_that_ran_is_timed(name: str, attention: str) -> None:
    counter, _ = profiled(name, attention)
    ran = {r.module_path for r in op_records(counter)}
    times = {row.path: row.time_ms for row in counter.by_module()}
    assert ran <= times.keys()
    assert [path for path in ran if not times[path] > 0] == []
    timed_types = [row.op_type for row in counter.by_op_type() if row.time_ms > 0]
    assert len(timed_types) > 1


@pytest.mark.parametrize("name", list(MODELS))
def test_eager_and_sdpa_differ_only_by_mask_bookkeeping(name: str) -> None:
    eager, sdpa = profiled(name, "eager")[0], profiled(name, "sdpa")[0]
    assert eager.total_flops - sdpa.total_flops == EAGER_MINUS_SDPA[name]
    own = {attention: {row.path: row.self_flops for row in counter.by_module()}
           for attention, counter in (("eager", eager), ("sdpa", sdpa))}
    differences = {path: own["eager"].get(path, 0) - own["sdpa"].get(path, 0) for path in own["eager"].keys() | own["sdpa"].keys()}
    assert {path: d for path, d in differences.items() if d} == SELF_FLOPS_DIFFERENCES[name]


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("name", list(MODELS))
def test_shape_only_run_gives_the_real_records(name: str, attention: str) -> None:
    if (name, attention) in SHAPE_ONLY_SKIPS:
        pytest.skip(SHAPE_ONLY_SKIPS[name, attention])
    model, inputs = model_and_inputs(name, attention)
    if name != "gpt2":
        inputs = {k: v for k, v in inputs.items() if k != "attention_mask"}
    counter = TorchFLOPsByFX(model)
    counter.propagate(**inputs, timing=False)
    real = [(r.name, r.target, r.module_path, r.flops) for r in counter.records]
    real_total = counter.total_flops
    counter.propagate_shapes(**inputs)
    assert counter.total_flops == real_total
    assert [(r.name, r.target, r.module_path, r.flops) for r in counter.records] == real


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("name", list(MODELS))
def test_output_is_the_models_own(name: str, attention: str) -> None:
    _, output = profiled(name, attention)
    model, inputs = model_and_inputs(name, attention)
    with torch.no_grad():
        expected = model(**inputs)
    got, want = tensors(output), tensors(expected)
    assert got and len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
