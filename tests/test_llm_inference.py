"""Prefill and decode of a small Llama (random weights, nothing downloaded) against the exact closed
form of docs/conventions.md ("Prefill and decode"), and the generation loop leaving model, cache and
inputs as a plain generation leaves them.

Dimensions: 2 layers, hidden h = 256, Hq = 8 heads of d = 32, Hkv = 2, MLP I = 512, vocabulary V = 1000.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from features import needs_transformers_5
from torch_flops import DEFAULT_REGISTRY, OpCall, TorchFLOPsByFX, cli, count_aten
from torch_flops.generation import cache_argument, cache_tensors, count_generation, phase_totals, returned_cache

T = pytest.importorskip("transformers")
if not T.is_torch_available():
    pytest.skip(f"transformers {T.__version__} does not run on torch {torch.__version__}", allow_module_level=True)

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore")]

_spec = importlib.util.spec_from_file_location("llm_inference", Path(__file__).parents[1] / "examples" / "llm_inference.py")
example = sys.modules["llm_inference"] = importlib.util.module_from_spec(_spec)  # (dataclasses look it up)
_spec.loader.exec_module(example)
DIMS = example.Dims()
P = 5


def llama() -> torch.nn.Module:
    torch.manual_seed(0)
    return example.build(DIMS)


def prompt(batch: int = 1, length: int = P) -> torch.Tensor:
    return torch.randint(0, DIMS.vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def test_closed_form_by_hand() -> None:
    """The closed form, written out for the prefill of P = 5 tokens (T = 5) and B = 1:
    per layer q, o 2 * 5*256*511 = 1,308,160; k, v 2 * 5*64*511 = 327,040; rotary 3.5 * 5*10*32 = 5,600;
    attention (is_causal, every score counted) 8*25*63 + 200 + 200 + 40*14 + 1,280*9 = 25,080;
    MLP 2 * 5*512*511 + 5*256*1023 = 3,925,760, SiLU and product 3 * 2,560 = 7,680; RMSNorms
    2 * (4*1,280 + 10) = 10,260; residual 2,560: 5,612,140 per layer. Once: final norm 5,130, LM head
    5*1000*511 = 2,555,000, rotary tables 5*16 + 4 * 160 = 720, positions 5: 2,560,855.
    Total 2 * 5,612,140 + 2,560,855 = 13,785,135."""
    assert example.forward_flops(DIMS, 1, P, 0) == 13_785_135
    # decode at cache length 5 (S = 6 positions): attention 8 * (6*63 + 6 + 17 + 32*11) = 6,024 per layer
    assert example.forward_flops(DIMS, 1, 1, 5) == 2_759_043


@needs_transformers_5
@pytest.mark.parametrize("attention", ["dense", "causal"])
@pytest.mark.parametrize("batch", [1, 2])
def test_prefill_and_decode_match_the_closed_form(attention: str, batch: int) -> None:
    model = llama()
    counts, _ = count_generation(model, prompt(batch), 3, counter=TorchFLOPsByFX(model, attention=attention))
    assert [c.phase for c in counts] == ["prefill", "decode", "decode", "decode"]
    assert counts[0].flops == example.forward_flops(DIMS, batch, P, 0, attention)
    for step, count in enumerate(counts[1:]):  # decode step `step` attends to P + step cached tokens and itself
        assert count.keys == P + step + 1
        assert count.flops == example.forward_flops(DIMS, batch, 1, P + step, attention)
    # causal: the prefill's attention counts U = B * 8 * 15 visible scores of B * 8 * 25
    if attention == "causal":
        assert counts[0].flops < example.forward_flops(DIMS, batch, P, 0, "dense")
        assert counts[1].flops == example.forward_flops(DIMS, batch, 1, P, "dense")  # decode: every key visible


def test_decode_step_against_the_approximation() -> None:
    """2N + 4 n_layer d S is the usual estimate: the exact count differs by the terms it leaves out."""
    n = example.non_embedding_params(DIMS)
    assert n == 2 * (2 * 256 * 256 + 2 * 256 * 64 + 3 * 256 * 512 + 2 * 256) + 256 + 1000 * 256  # 1,371,392
    exact = example.forward_flops(DIMS, 1, 1, 63)  # S = 64
    assert abs(exact - (2 * n + 4 * 2 * 256 * 64)) / exact < 0.01


def test_counting_leaves_model_cache_and_tokens_as_plain_generation() -> None:
    model, ids = llama(), prompt()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    ids_before = ids.clone()
    counts, generated = count_generation(model, ids, 3)
    # the same loop without counting
    name = cache_argument(model)
    with torch.no_grad():
        output = model(input_ids=ids, use_cache=True)
        cache, tokens = returned_cache(output), []
        for _ in range(3):
            tokens.append(output.logits[:, -1:].argmax(-1))
            output = model(input_ids=tokens[-1], use_cache=True, **{name: cache})
    assert torch.equal(generated, torch.cat(tokens, dim=1))
    assert torch.equal(ids, ids_before) and not model.training
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())
    # the cache grows by one position per step, as without counting: 2 layers x (K, V) of [1, 2, S, 32] floats
    assert [c.keys for c in counts] == [5, 6, 7, 8]
    assert [c.cache_bytes for c in counts] == [2 * 2 * 2 * s * 32 * 4 for s in (5, 6, 7, 8)]
    assert cache.get_seq_length() == 8 and len(cache_tensors(cache)) == 4


def test_phases_bytes_and_intensity() -> None:
    model = llama()
    counts, _ = count_generation(model, prompt(length=32), 2)
    weights = sum(p.numel() for p in model.parameters()) * 4
    for count in counts:  # every weight is read (and the activations and the KV cache besides)
        assert count.read_bytes > weights
    prefill, decode = phase_totals(counts)
    assert (prefill.phase, prefill.tokens, decode.phase, decode.steps, decode.tokens) == ("prefill", 32, "decode", 2, 2)
    assert decode.flops == counts[1].flops + counts[2].flops
    assert decode.arithmetic_intensity < 1 < 5 < prefill.arithmetic_intensity  # decode is memory-bound
    top = counts[-1].modules[0]
    assert (top.path, top.flops, top.weight_bytes) == ("lm_head", 1000 * 511, 1000 * 256 * 4)
    # its one call reads the weight and the token's hidden state and writes 1,000 logits (float32)
    assert top.moved_bytes == 1000 * 256 * 4 + 256 * 4 + 1000 * 4


@needs_transformers_5
def test_function_and_aten_sdpa_prices_agree_on_llamas_calls() -> None:
    """Counted at the function level (a TorchFunctionMode in leaves), HF's SDPA calls cost what the aten
    kernel they dispatch costs: prefill (is_causal, GQA), decode (no mask) and padding (a boolean mask)."""
    rule = DEFAULT_REGISTRY.function_rule(F.scaled_dot_product_attention)

    class Prices(TorchFunctionMode):
        flops = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            output = func(*args, **kwargs)
            if func is F.scaled_dot_product_attention:
                Prices.flops += rule.fn(OpCall(args, kwargs, output)).flops
            return output

    model, ids = llama(), prompt(2)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    for kwargs in ({"input_ids": ids}, {"input_ids": ids, "attention_mask": mask}):
        Prices.flops = 0
        with Prices():
            _, tally = count_aten(model, **kwargs)
        sdpa = sum(c.flops for label, c in tally.by_op.items() if "scaled_dot_product" in label)
        where = tally.by_op["aten.where"].flops if "attention_mask" in kwargs else 0  # the bool mask's conversion
        assert Prices.flops == sdpa + where > 0


@needs_transformers_5
def test_cli_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    factory = tmp_path / "llama_factory.py"
    factory.write_text(
        "import transformers\n"
        "def make():\n"
        "    return transformers.LlamaForCausalLM(transformers.LlamaConfig(num_hidden_layers=2, hidden_size=256,\n"
        "        num_attention_heads=8, num_key_value_heads=2, intermediate_size=512, vocab_size=1000))\n"
    )
    code = cli.main([f"{factory}:make", "--input-shape", "1,5", "--generate", "2", "--attention", "causal"])
    out = capsys.readouterr().out
    assert code == 0
    prefill = next(line for line in out.splitlines() if line.startswith("prefill "))
    assert f"{example.forward_flops(DIMS, 1, P, 0, 'causal'):,}" in prefill
    decode = next(line for line in out.splitlines() if line.startswith("decode "))
    assert f"{example.forward_flops(DIMS, 1, 1, 5) + example.forward_flops(DIMS, 1, 1, 6):,}" in decode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main([f"{factory}:make", "--input-shape", "1,5", "--generate", "2", "--meta"]) == 2
    assert "--generate" in capsys.readouterr().err
