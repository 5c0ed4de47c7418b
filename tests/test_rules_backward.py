"""Backward aten rules (``torch_flops/rules/backward.py``): a real backward pass runs under
:class:`~torch_flops.fallback.AtenCostMode` and its tally is compared with hand arithmetic.

The forward runs outside the mode, so the tally holds the backward alone; ``out.backward(ones)`` starts
it (the ones are made outside the mode too). Every case also checks that no op was left unsupported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_flops import Cost
from torch_flops.fallback import AtenCostMode, AtenTally
from torch_flops.rules import backward

torch.manual_seed(0)


def backward_tally(fn: Callable[..., Any], *inputs: torch.Tensor) -> AtenTally:
    """Run ``fn(*inputs)``, then its backward under the mode; the tally of the backward alone."""
    with torch.enable_grad():
        out = fn(*inputs)
        outputs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(o, torch.Tensor) and o.requires_grad]
        grads = [torch.ones_like(o) for o in outputs]
        mode = AtenCostMode()
        with mode:
            torch.autograd.backward(outputs, grads)
    assert not mode.tally.unsupported, dict(mode.tally.unsupported)
    return mode.tally


def leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).requires_grad_()


def flops_of(tally: AtenTally, label: str) -> int:
    return tally.by_op.get(label, Cost(0, 0)).flops


# -- Linear: mm and sum, no rule of its own ----------------------------------------------------------
GRAD_INPUT = 8 * 64 * (2 * 32 - 1)  # (8, 32) @ (32, 64) = 32,256
GRAD_WEIGHT = 32 * 64 * (2 * 8 - 1)  # (32, 8) @ (8, 64) = 30,720
GRAD_BIAS = 32 * (8 - 1)  # sum over the batch = 224


def test_linear_backward_is_two_products_and_a_sum() -> None:
    layer = nn.Linear(64, 32)
    tally = backward_tally(layer, leaf(8, 64))
    assert (GRAD_INPUT, GRAD_WEIGHT, GRAD_BIAS) == (32_256, 30_720, 224)
    assert tally.calls["aten.mm"] == 2
    assert flops_of(tally, "aten.mm") == GRAD_INPUT + GRAD_WEIGHT
    assert flops_of(tally, "aten.sum") == GRAD_BIAS
    assert tally.cost.flops == GRAD_INPUT + GRAD_WEIGHT + GRAD_BIAS
    assert tally.cost.macs == 8 * 64 * 32 + 32 * 64 * 8  # the products' MACs; a sum has none


def test_linear_backward_without_input_grad_has_no_grad_input_product() -> None:
    tally = backward_tally(nn.Linear(64, 32), torch.randn(8, 64))
    assert tally.calls["aten.mm"] == 1
    assert tally.cost.flops == GRAD_WEIGHT + GRAD_BIAS


def test_linear_backward_with_frozen_parameters_is_grad_input_only() -> None:
    layer = nn.Linear(64, 32).requires_grad_(False)
    tally = backward_tally(layer, leaf(8, 64))
    assert tally.cost.flops == GRAD_INPUT


# -- convolution_backward ----------------------------------------------------------------------------
CONV_CASES = [
    # (id, layer, input shape, (grad input, grad weight, grad bias))
    ("conv2d", nn.Conv2d(3, 8, 3, padding=1), (2, 3, 8, 8),
     # out (2, 8, 8, 8): 1,024; w 8*3*9 = 216; positions 2*64 = 128
     (2 * 1_024 * 3 * 9, 216 * (2 * 128 - 1), 8 * (128 - 1))),
    ("conv2d-groups-stride", nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), (1, 4, 9, 9),
     # out (1, 8, 5, 5): 200, Cin/g = 2; w 8*2*9 = 144; positions 25
     (2 * 200 * 2 * 9, 144 * (2 * 25 - 1), 8 * (25 - 1))),
    ("conv1d-dilation", nn.Conv1d(2, 4, 3, dilation=2), (3, 2, 10),
     # out (3, 4, 6): 72; w 4*2*3 = 24; positions 3*6 = 18
     (2 * 72 * 2 * 3, 24 * (2 * 18 - 1), 4 * (18 - 1))),
    ("conv3d", nn.Conv3d(2, 3, 2), (1, 2, 4, 4, 4),
     # out (1, 3, 3, 3, 3): 81; w 3*2*8 = 48; positions 27
     (2 * 81 * 2 * 8, 48 * (2 * 27 - 1), 3 * (27 - 1))),
    ("conv-transpose2d", nn.ConvTranspose2d(4, 2, 3, stride=2), (1, 4, 5, 5),
     # out (1, 2, 11, 11); grad input is a conv: 100 outputs over Cout/g * 9 = 18; w 4*2*9 = 72 over N*25 inputs
     (100 * (2 * 18 - 1), 72 * (2 * 25 - 1), 2 * (121 - 1))),
]


@pytest.mark.parametrize("layer, shape, expected", [c[1:] for c in CONV_CASES], ids=[c[0] for c in CONV_CASES])
def test_convolution_backward(layer: nn.Module, shape: tuple[int, ...], expected: tuple[int, int, int]) -> None:
    grad_input, grad_weight, grad_bias = expected
    assert flops_of(backward_tally(layer, leaf(*shape)), "aten.convolution_backward") == grad_input + grad_weight + grad_bias
    # output_mask: an input that needs no gradient, then a frozen bias, then a frozen weight
    assert flops_of(backward_tally(layer, torch.randn(*shape)), "aten.convolution_backward") == grad_weight + grad_bias
    layer.bias.requires_grad_(False)
    assert flops_of(backward_tally(layer, torch.randn(*shape)), "aten.convolution_backward") == grad_weight
    layer.weight.requires_grad_(False)
    assert flops_of(backward_tally(layer, leaf(*shape)), "aten.convolution_backward") == grad_input


def test_conv_backward_worked_example() -> None:
    """The module docstring's example: ``Conv2d(3, 8, 3, padding=1)`` on ``(2, 3, 8, 8)``."""
    cost = backward.conv_backward_cost((2, 3, 8, 8), (8, 3, 3, 3), (2, 8, 8, 8), False, (True, True, True))
    assert cost.flops == 55_296 + 55_080 + 1_016
    assert cost.macs == 1_024 * 27 + 216 * 128  # the products; the bias sum has none


# -- norms -------------------------------------------------------------------------------------------
def test_layer_norm_backward() -> None:
    # (4, 16), rows of 16: x_hat 2*64; grad input 64 * (7 + 1); weight 16 dot products of 4; bias 16 sums of 4
    expected = 2 * 64 + 64 * 8 + 16 * (2 * 4 - 1) + 16 * (4 - 1)
    tally = backward_tally(nn.LayerNorm(16), leaf(4, 16))
    assert flops_of(tally, "aten.native_layer_norm_backward") == expected == 800
    # no affine parameters: x_hat and grad input 64 * 7
    tally = backward_tally(nn.LayerNorm(16, elementwise_affine=False), leaf(4, 16))
    assert flops_of(tally, "aten.native_layer_norm_backward") == 2 * 64 + 64 * 7


def test_group_norm_backward() -> None:
    # (2, 4, 3, 3): 72 elements, 2 * 2 statistics groups; parameters of 4 channels, each over 2 * 9 = 18
    expected = 2 * 72 + 72 * 8 + 4 * (2 * 18 - 1) + 4 * (18 - 1)
    tally = backward_tally(nn.GroupNorm(2, 4), leaf(2, 4, 3, 3))
    assert flops_of(tally, "aten.native_group_norm_backward") == expected == 928


def test_batch_norm_backward_training_and_eval() -> None:
    # (2, 4, 3, 3): 72 elements, 4 channels of 18; training, all three gradients: 9 * 72 + 4
    layer = nn.BatchNorm2d(4)
    tally = backward_tally(layer, leaf(2, 4, 3, 3))
    assert flops_of(tally, "aten.native_batch_norm_backward") == 9 * 72 + 4 == 652
    # eval: invstd 2*4; x_hat 2*72 and sum(dy x_hat) 72 + 4*17 (grad weight); sum(dy) 4*17 (grad bias);
    # grad input dy * (w invstd): 4 + 72
    layer.eval()
    tally = backward_tally(layer, leaf(2, 4, 3, 3))
    assert flops_of(tally, "aten.native_batch_norm_backward") == 8 + 144 + (72 + 68) + 68 + (4 + 72)


# -- activations -------------------------------------------------------------------------------------
ACTIVATION_CASES = [
    ("relu", nn.ReLU(), "aten.threshold_backward", 1),
    ("gelu", nn.GELU(), "aten.gelu_backward", 11),
    ("gelu-tanh", nn.GELU(approximate="tanh"), "aten.gelu_backward", 19),
    ("silu", nn.SiLU(), "aten.silu_backward", 6),
    ("sigmoid", nn.Sigmoid(), "aten.sigmoid_backward", 3),
    ("tanh", nn.Tanh(), "aten.tanh_backward", 3),
    ("hardswish", nn.Hardswish(), "aten.hardswish_backward", 5),
    ("hardsigmoid", nn.Hardsigmoid(), "aten.hardsigmoid_backward", 3),
    ("relu6", nn.ReLU6(), "aten.hardtanh_backward", 2),
    ("leaky_relu", nn.LeakyReLU(0.1), "aten.leaky_relu_backward", 3),
    ("elu", nn.ELU(), "aten.elu_backward", 5),
    ("softplus", nn.Softplus(), "aten.softplus_backward", 6),
    ("mish", nn.Mish(), "aten.mish_backward", 11),
]


@pytest.mark.parametrize("layer, label, per", [c[1:] for c in ACTIVATION_CASES], ids=[c[0] for c in ACTIVATION_CASES])
def test_activation_backward(layer: nn.Module, label: str, per: int) -> None:
    tally = backward_tally(lambda x: layer(x * 1), leaf(4, 5))  # x * 1: an in-place layer may not take a leaf
    assert flops_of(tally, label) == 20 * per


def test_elu_backward_from_its_result() -> None:
    """An in-place ELU keeps only its result: compare, add, 2 multiplies."""
    tally = backward_tally(lambda x: F.elu(x * 1, inplace=True), leaf(4, 5))
    assert flops_of(tally, "aten.elu_backward") == 20 * 4


# -- softmax, pooling, embedding, losses -------------------------------------------------------------
def test_softmax_and_log_softmax_backward() -> None:
    # 3 rows of 5: 3 * (4*5 - 1) = 57 each
    assert flops_of(backward_tally(lambda x: x.softmax(-1), leaf(3, 5)), "aten._softmax_backward_data") == 57
    assert flops_of(backward_tally(lambda x: x.log_softmax(-1), leaf(3, 5)), "aten._log_softmax_backward_data") == 57


def test_pooling_backward() -> None:
    x = (1, 2, 4, 4)
    # 8 outputs: max pool adds each into its argmax; average pool a divide and 4 adds each
    assert flops_of(backward_tally(nn.MaxPool2d(2), leaf(*x)), "aten.max_pool2d_with_indices_backward") == 8
    assert flops_of(backward_tally(nn.AvgPool2d(2), leaf(*x)), "aten.avg_pool2d_backward") == 8 * (4 + 1)
    # adaptive 4 -> 3 per dim: windows [0, 2), [1, 3), [2, 4): 2 + 2 + 2 = 6 per dim, 36 per plane, 2 planes;
    # + 18 divides
    tally = backward_tally(nn.AdaptiveAvgPool2d(3), leaf(*x))
    assert flops_of(tally, "aten._adaptive_avg_pool2d_backward") == 2 * 36 + 18 == 90
    assert flops_of(backward_tally(nn.AdaptiveMaxPool2d(3), leaf(*x)), "aten.adaptive_max_pool2d_backward") == 18


def _index_put_tally(x: torch.Tensor, indices: tuple, values: torch.Tensor, accumulate: bool) -> AtenTally:
    mode = AtenCostMode()
    with mode:
        torch.ops.aten.index_put.default(x, list(indices), values, accumulate)  # the aten op takes None indices
    return mode.tally


def test_index_put_adds_only_when_it_accumulates() -> None:
    x, rows = torch.zeros(5, 4), torch.tensor([0, 2, 2])
    assert flops_of(_index_put_tally(x, (rows,), torch.ones(3, 4), True), "aten.index_put") == 3 * 4
    assert _index_put_tally(x, (rows,), torch.ones(3, 4), False).cost == Cost(0, 0)  # a write
    columns = torch.tensor([1, 3])
    # (None, columns) keeps dimension 0: 5 rows x 2 columns, a scalar broadcast to them
    assert flops_of(_index_put_tally(x, (None, columns), torch.tensor(1.0), True), "aten.index_put") == 5 * 2
    mask = torch.tensor([True, False, True, False, False])  # 2 rows of 4
    assert flops_of(_index_put_tally(x, (mask,), torch.tensor(1.0), True), "aten.index_put") == 2 * 4
    pairs = (torch.tensor([[0], [4]]), torch.tensor([0, 1, 3]))  # broadcast to (2, 3)
    assert flops_of(_index_put_tally(x, pairs, torch.tensor(1.0), True), "aten.index_put") == 2 * 3


def _aten_tally(fn: Callable[[], Any]) -> AtenTally:
    mode = AtenCostMode()
    with mode:
        fn()
    return mode.tally


@pytest.mark.filterwarnings("ignore::UserWarning")  # scatter's reduce= is deprecated in favour of scatter_reduce
def test_scatters_that_combine_cost_an_op_per_element_combined() -> None:
    x, index, src = torch.zeros(5), torch.tensor([0, 1, 1, 2, 2, 2]), torch.ones(6)
    assert _aten_tally(lambda: x.scatter(0, index, src)).cost == Cost(0, 0)  # a write
    assert _aten_tally(lambda: torch.ops.aten.scatter.reduce(x, 0, index, src, reduce="add")).cost.flops == 6
    assert _aten_tally(lambda: torch.scatter_reduce(x, 0, index, src, "amax")).cost.flops == 6
    # mean: 6 adds, 6 counts, a division for each of the 5 outputs
    assert _aten_tally(lambda: torch.scatter_reduce(x, 0, index, src, "mean")).cost.flops == 2 * 6 + 5
    rows = torch.zeros(4, 3)
    source, picked = torch.ones(5, 3), torch.tensor([0, 0, 1, 3, 3])
    assert _aten_tally(lambda: rows.index_reduce(0, picked, source, "prod")).cost.flops == 5 * 3


def test_advanced_indexing_backward_accumulates_into_the_rows_it_read() -> None:
    """``x[rows]`` reads 3 rows of 4 (row 2 twice); its backward adds each of the 12 gradient elements
    into the row it came from."""
    tally = backward_tally(lambda x: x[torch.tensor([0, 2, 2])], leaf(5, 4))
    assert tally.cost.flops == 3 * 4


def test_embedding_backward() -> None:
    indices = torch.tensor([[0, 1, 2], [0, 3, 4]])
    # 6 rows of 4 added into the table
    assert flops_of(backward_tally(nn.Embedding(10, 4), indices), "aten.embedding_dense_backward") == 6 * 4
    # padding_idx 0 skips 2 rows; scale_grad_by_freq divides each row first
    tally = backward_tally(nn.Embedding(10, 4, padding_idx=0, scale_grad_by_freq=True), indices)
    assert flops_of(tally, "aten.embedding_dense_backward") == 2 * 4 * 4


def test_cross_entropy_and_mse_backward() -> None:
    target = torch.tensor([0, 3, 1, 4])
    tally = backward_tally(lambda x: F.cross_entropy(x, target), leaf(4, 5))
    assert flops_of(tally, "aten.nll_loss_backward") == 4 + 1  # a negation per sample, a divide by the total weight
    assert flops_of(tally, "aten._log_softmax_backward_data") == 4 * (4 * 5 - 1)
    tally = backward_tally(lambda x: F.mse_loss(x, torch.zeros(3, 4)), leaf(3, 4))
    assert flops_of(tally, "aten.mse_loss_backward") == 3 * 12


def test_loss_forward_rules() -> None:
    # nll_loss, mean over 4 samples: 4 negations, 3 adds, 1 divide; mse_loss, mean of 12: 24 + 12
    assert backward.nll_loss_cost(4, False, "mean").flops == 4 + 3 + 1
    assert backward.nll_loss_cost(4, True, "mean").flops == 4 * 2 + 3 + 1 + 3
    assert backward.mse_loss_cost(12, "mean").flops == 2 * 12 + 12
    assert backward.mse_loss_cost(12, "sum").flops == 2 * 12 + 11


def test_native_dropout_forward_and_backward() -> None:
    x = leaf(4, 5)
    tally = backward_tally(lambda t: torch.ops.aten.native_dropout(t, 0.5, True)[0], x)
    assert flops_of(tally, "aten.native_dropout_backward") == 2 * 20


# -- attention ---------------------------------------------------------------------------------------
def _sdpa_backward_expected(b: int, l: int, s: int, e: int, ev: int, masked: bool) -> int:
    scores = b * l * s
    return (scores * (2 * e - 1) + scores * (3 + masked)  # recompute Q K^T, scale, [mask], exp(S - lse)
            + b * s * ev * (2 * l - 1) + scores * (2 * ev - 1)  # dV, dP
            + b * l * (2 * ev - 1) + 3 * scores  # D, dS
            + b * l * e * (2 * s - 1) + b * s * e * (2 * l - 1))  # dQ, dK


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_sdpa_backward(causal: bool) -> None:
    q, k, v = leaf(1, 2, 4, 8), leaf(1, 2, 4, 8), leaf(1, 2, 4, 8)
    tally = backward_tally(lambda *t: F.scaled_dot_product_attention(*t, is_causal=causal), q, k, v)
    fused = [label for label in tally.calls if label.startswith("aten._scaled_dot_product") and label.endswith("_backward")]
    if not fused:
        pytest.skip("this torch runs SDPA's backward on this device as its math path (priced by mm/softmax rules)")
    # B = 2, L = S = 4, E = Ev = 8: 480 + 96 + 448 + 480 + 120 + 96 + 448 + 448 = 2,616 (+ 32 causal)
    assert flops_of(tally, fused[0]) == _sdpa_backward_expected(2, 4, 4, 8, 8, causal) == 2_616 + 32 * causal


def test_sdpa_backward_grouped_query_heads_sum_key_gradients() -> None:
    # 4 query heads share 2 key heads: dK, dV of the extra 2 heads summed: 2 * S (E + Ev) adds
    plain = backward.sdpa_backward_cost(4, 4, 4, 4, 8, 8, False)
    grouped = backward.sdpa_backward_cost(4, 2, 4, 4, 8, 8, False)
    assert grouped.flops - plain.flops == 2 * 4 * (8 + 8)


# -- whole models ------------------------------------------------------------------------------------
def _model_backward_unsupported(model: nn.Module, inputs: dict[str, torch.Tensor] | tuple, loss: Callable[[Any], torch.Tensor]) -> dict:
    mode = AtenCostMode()
    with torch.enable_grad(), mode:
        out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
        loss(out).backward()
    assert mode.tally.cost.flops > 0
    return dict(mode.tally.unsupported)


def test_resnet18_forward_and_backward_fully_priced() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None)
    target = torch.tensor([1, 2])
    assert _model_backward_unsupported(model, (torch.randn(2, 3, 32, 32),), lambda o: F.cross_entropy(o, target)) == {}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_transformers_forward_and_backward_fully_priced(family: str, attention: str) -> None:
    T = pytest.importorskip("transformers")
    if not T.is_torch_available():
        pytest.skip(f"transformers {T.__version__} does not run on torch {torch.__version__}")
    if family == "gpt2":
        config = T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64, attn_implementation=attention)
        model = T.GPT2LMHeadModel(config)
    else:
        config = T.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                               intermediate_size=128, vocab_size=1000, attn_implementation=attention)
        model = T.LlamaForCausalLM(config)
    ids = torch.randint(0, 1000, (2, 16))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    assert _model_backward_unsupported(model, inputs, lambda o: o.loss) == {}
    assert _model_backward_unsupported(model, {"input_ids": ids}, lambda o: o.logits.float().sum()) == {}


def test_resampling_padding_and_gather_backward() -> None:
    x = (1, 2, 4, 4)
    # bilinear x2: 128 grad outputs, each spread over 4 inputs (multiply, add): 128 * 8
    tally = backward_tally(nn.Upsample(scale_factor=2, mode="bilinear"), leaf(*x))
    assert flops_of(tally, "aten.upsample_bilinear2d_backward") == 128 * 2 * 4
    # nearest x2 and reflection padding: an add per grad output
    assert flops_of(backward_tally(nn.Upsample(scale_factor=2), leaf(*x)), "aten.upsample_nearest2d_backward") == 128
    tally = backward_tally(lambda t: F.pad(t, (1, 1), mode="reflect"), leaf(1, 2, 4))
    assert flops_of(tally, "aten.reflection_pad1d_backward") == 2 * 6
    # gather of 4 x 2 values: its backward scatter-adds 8
    tally = backward_tally(lambda t: t.gather(1, torch.zeros(4, 2, dtype=torch.long)), leaf(4, 8))
    assert flops_of(tally, "aten.scatter_add") == 8
