"""Recurrent layers (``torch_flops/rules/recurrent.py``): hand-computed costs, FX vs aten agreement, and
the aten kernels that cannot run on this machine (CUDA, ROCm) priced from their arguments.

Every table row is ``(id, model, inputs, expected_flops, expected_macs)`` with the arithmetic beside it.
A "row" is one time step of one batch element; with input size I = 3, hidden size H = 4 and G gates,
one row of one layer and direction costs (see the module docstring):

    FLOPs  G H (2I - 1) + G H (2R - 1) + 2 G H [bias] + c H (+ P (2H - 1) with proj_size P)
    MACs   G H I + G H R + 2 G H [bias] (+ P H)

with R = P or H and c = 2 (RNN), 10 (GRU), 13 (LSTM). For I = 3, H = 4 (R = H) that is per row:

    RNN  (G = 1):  20 + 28 +  8 +  8 =  64 FLOPs (56 without bias);  12 + 16 +  8 =  36 MACs (28)
    GRU  (G = 3):  60 + 84 + 24 + 40 = 208 FLOPs (184 without bias); 36 + 48 + 24 = 108 MACs (84)
    LSTM (G = 4):  80 + 112 + 32 + 52 = 276 FLOPs (244 without bias); 48 + 64 + 32 = 144 MACs (112)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import torch_flops
from torch_flops import Cost, Status, TorchFLOPsByFX
from torch_flops.registry import DEFAULT_REGISTRY, OpCall
from torch_flops.rules.linear import matmul_cost
from torch_flops.rules.recurrent import rnn_cost

torch.manual_seed(0)

aten = torch.ops.aten


# -- helpers -----------------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class WithState(nn.Module):
    """Calls a recurrent layer with an initial state: ``layer(x, hx)`` is one ``call_module`` node."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Any, hx: Any) -> Any:
        return self.layer(x, hx)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def packed() -> PackedSequence:
    """Three sequences of lengths 5, 3, 2 with 3 features: batch_sizes [3, 3, 2, 1, 1], 10 rows."""
    return pack_padded_sequence(randn(5, 3, 3), [5, 3, 2])


def as_module(layer: nn.Module, inputs: Sequence[Any]) -> nn.Module:
    """FX always traces into the root, so a bare ``torch.nn`` layer is put in a container to stay one
    ``call_module`` node: ``nn.Sequential`` for one input, :class:`WithState` for ``(x, hx)``."""
    return nn.Sequential(layer) if len(inputs) == 1 else WithState(layer)


def fx_cost(layer: nn.Module, inputs: Sequence[Any]) -> tuple[int, int]:
    """(FLOPs, MACs) of the FX count; the layer must be priced by its own rule."""
    counter = TorchFLOPsByFX(as_module(layer, inputs))
    counter.propagate(*inputs)
    statuses = {r.target: r.status for r in counter.records if r.op == "call_module"}
    assert list(statuses.values()) == [Status.RULE], statuses
    return counter.total_flops, counter.total_macs


def params(cases: list[tuple]) -> list:
    return [pytest.param(*case, id=case[0]) for case in cases]


SIGNATURE = "case_id, layer, inputs, flops, macs"


# -- hand-computed costs -----------------------------------------------------------------------------
# (T, B, I) = (5, 2, 3): 10 rows unless noted
RNN_CASES = [
    ("rnn", nn.RNN(3, 4), (randn(5, 2, 3),),
     640, 360),  # 10 rows * 64 = 640; MACs 10 * 36 = 360
    ("rnn_relu", nn.RNN(3, 4, nonlinearity="relu"), (randn(5, 2, 3),),
     640, 360),  # relu costs 1, as tanh
    ("rnn_no_bias", nn.RNN(3, 4, bias=False), (randn(5, 2, 3),),
     560, 280),  # 10 * (20 + 28 + 8) = 560; MACs 10 * (12 + 16) = 280
    ("rnn_batch_first", nn.RNN(3, 4, batch_first=True), (randn(2, 5, 3),),
     640, 360),  # same 10 rows
    ("rnn_unbatched", nn.RNN(3, 4), (randn(5, 3),),
     320, 180),  # 5 rows * 64 = 320; MACs 5 * 36 = 180
    ("rnn_initial_state", nn.RNN(3, 4), (randn(5, 2, 3), randn(1, 2, 4)),
     640, 360),  # a given h0 costs the same as the zero default
    ("rnn_2_layers_bidirectional", nn.RNN(3, 4, num_layers=2, bidirectional=True), (randn(5, 2, 3),),
     3_360, 1_840),  # layer 0: 2 * 64 = 128; layer 1 reads I = 2*4 = 8: 2 * (4*15 + 28 + 8 + 8) = 208;
    #                  10 * (128 + 208) = 3,360; MACs 10 * (2*36 + 2*(32 + 16 + 8)) = 1,840
    ("rnn_packed_bidirectional", nn.RNN(3, 4, bidirectional=True), (packed(),),
     1_280, 720),  # sum(batch_sizes) = 10 rows * 2 directions * 64 = 1,280; MACs 10 * 2 * 36 = 720
]

GRU_CASES = [
    ("gru", nn.GRU(3, 4), (randn(5, 2, 3),),
     2_080, 1_080),  # 10 * 208 = 2,080; MACs 10 * 108 = 1,080
    ("gru_no_bias", nn.GRU(3, 4, bias=False), (randn(5, 2, 3),),
     1_840, 840),  # 10 * (60 + 84 + 40) = 1,840; MACs 10 * (36 + 48) = 840
    ("gru_2_layers_bidirectional_batch_first", nn.GRU(3, 4, 2, bidirectional=True, batch_first=True),
     (randn(2, 5, 3),),
     10_720, 5_520),  # layer 0: 2 * 208 = 416; layer 1 (I = 8): 2 * (12*15 + 84 + 24 + 40) = 656;
    #                   10 * 1,072 = 10,720; MACs 10 * (2*108 + 2*(96 + 48 + 24)) = 5,520
    ("gru_2_layers_packed", nn.GRU(3, 4, 2), (packed(),),
     4_400, 2_280),  # layer 1 (I = 4): 84 + 84 + 24 + 40 = 232; 10 * (208 + 232) = 4,400;
    #                  MACs 10 * (108 + 48 + 48 + 24) = 2,280
]

LSTM_CASES = [
    ("lstm", nn.LSTM(3, 4), (randn(5, 2, 3),),
     2_760, 1_440),  # 10 * 276 = 2,760; MACs 10 * 144 = 1,440
    ("lstm_no_bias", nn.LSTM(3, 4, bias=False), (randn(5, 2, 3),),
     2_440, 1_120),  # 10 * (80 + 112 + 52) = 2,440; MACs 10 * (48 + 64) = 1,120
    ("lstm_batch_first", nn.LSTM(3, 4, batch_first=True), (randn(2, 5, 3),),
     2_760, 1_440),  # same 10 rows
    ("lstm_unbatched", nn.LSTM(3, 4), (randn(5, 3),),
     1_380, 720),  # 5 rows * 276 = 1,380; MACs 5 * 144 = 720
    ("lstm_initial_state", nn.LSTM(3, 4), (randn(5, 2, 3), (randn(1, 2, 4), randn(1, 2, 4))),
     2_760, 1_440),  # as lstm
    ("lstm_2_layers_bidirectional", nn.LSTM(3, 4, 2, bidirectional=True), (randn(5, 2, 3),),
     14_240, 7_360),  # layer 0: 2 * 276 = 552; layer 1 (I = 8): 2 * (16*15 + 112 + 32 + 52) = 872;
    #                   10 * 1,424 = 14,240; MACs 10 * (2*144 + 2*(128 + 64 + 32)) = 7,360
    ("lstm_proj", nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2), (randn(5, 2, 3),),
     9_680, 5_120),  # R = 2; layer 0: 80 + 16*3 + 32 + 52 + 2*7 (projection) = 226;
    #                  layer 1 reads I = 2*2 = 4: 16*7 + 48 + 32 + 52 + 14 = 258; 10 * 2 * (226 + 258) = 9,680;
    #                  MACs layer 0: 48 + 32 + 32 + 8 = 120, layer 1: 64 + 32 + 32 + 8 = 136; 10 * 2 * 256 = 5,120
    ("lstm_proj_no_bias", nn.LSTM(3, 4, proj_size=2, bias=False), (randn(5, 2, 3),),
     1_940, 880),  # 10 * (80 + 48 + 52 + 14) = 1,940; MACs 10 * (48 + 32 + 8) = 880
    ("lstm_2_layers_bidirectional_packed", nn.LSTM(3, 4, 2, bidirectional=True), (packed(),),
     14_240, 7_360),  # 10 packed rows: as lstm_2_layers_bidirectional
]

# a cell is one step of one layer: its rows are the batch (B = 2), 1 unbatched
CELL_CASES = [
    ("rnn_cell", nn.RNNCell(3, 4), (randn(2, 3),),
     128, 72),  # 2 * 64 = 128; MACs 2 * 36 = 72
    ("rnn_cell_relu_no_bias", nn.RNNCell(3, 4, bias=False, nonlinearity="relu"), (randn(2, 3),),
     112, 56),  # 2 * 56 = 112; MACs 2 * 28 = 56
    ("rnn_cell_initial_state", nn.RNNCell(3, 4), (randn(2, 3), randn(2, 4)),
     128, 72),  # as rnn_cell
    ("gru_cell", nn.GRUCell(3, 4), (randn(2, 3),),
     416, 216),  # 2 * 208 = 416; MACs 2 * 108 = 216
    ("gru_cell_no_bias", nn.GRUCell(3, 4, bias=False), (randn(2, 3),),
     368, 168),  # 2 * 184 = 368; MACs 2 * 84 = 168
    ("lstm_cell", nn.LSTMCell(3, 4), (randn(2, 3),),
     552, 288),  # 2 * 276 = 552; MACs 2 * 144 = 288
    ("lstm_cell_unbatched", nn.LSTMCell(3, 4), (randn(3),),
     276, 144),  # 1 row
    ("lstm_cell_initial_state", nn.LSTMCell(3, 4), (randn(2, 3), (randn(2, 4), randn(2, 4))),
     552, 288),  # as lstm_cell
]

ALL_CASES = RNN_CASES + GRU_CASES + LSTM_CASES + CELL_CASES


@pytest.mark.parametrize(SIGNATURE, params(ALL_CASES))
def test_hand_computed(case_id: str, layer: nn.Module, inputs: tuple, flops: int, macs: int) -> None:
    assert fx_cost(layer, inputs) == (flops, macs), case_id


def test_rnn_cost_is_pure_ints() -> None:
    # the module docstring's worked example: nn.LSTM(3, 4) on (5, 2, 3)
    assert rnn_cost("LSTM", 3, 4, rows=10) == Cost(2_760, 1_440)
    assert rnn_cost("GRU", 3, 4, rows=0) == Cost(0, 0)
    # one layer of a bidirectional stack is half of it: 10 rows * 128 / 2
    assert rnn_cost("RNN_TANH", 3, 4, rows=10, bidirectional=True) == Cost(1_280, 720)
    with pytest.raises(ValueError, match="unknown recurrent cell"):
        rnn_cost("QRNN", 3, 4, rows=1)


# -- FX level vs aten level --------------------------------------------------------------------------
def _input_bias_macs_lost(layer: nn.Module, inputs: Sequence[Any], tally: torch_flops.AtenTally) -> int:
    """MACs the aten-level count cannot see as such, 0 for every layer but one case.

    The decomposed path projects all inputs of layer 0 with ``F.linear``. A batch_first input is
    transposed to (T, B, I), which is not contiguous, and ``aten.linear`` of a non-contiguous 3-D
    input runs as ``aten.mm`` + ``aten.add`` instead of ``aten.addmm``: the bias adds are still one FLOP
    each, but an elementwise ``add`` has no MACs. So the aten-level MACs are lower by the layer-0 input
    bias adds, rows * D * G * H. The FX rule keeps the convention (a bias is a MAC, as in ``Linear``).
    oneDNN's ``mkldnn_rnn_layer`` takes batch_first as it is, so LSTM on that path agrees.
    """
    decomposed = "aten.mkldnn_rnn_layer" not in tally.calls
    if not (decomposed and getattr(layer, "batch_first", False) and layer.bias):
        return 0
    gates = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}[layer.mode]
    rows = inputs[0].shape[0] * inputs[0].shape[1]
    return rows * (2 if layer.bidirectional else 1) * gates * layer.hidden_size


def _aten_cost(layer: nn.Module, inputs: Sequence[Any]) -> torch_flops.AtenTally:
    _, tally = torch_flops.count_aten(layer.eval(), *inputs)
    # the decomposed batch_first path ends with an in-place ``output.transpose_(0, 1)``: it has no
    # aten rule yet (rules/shape.py lists the Tensor method ``transpose_``, not the aten op)
    allowed = {"aten.transpose_"} if getattr(layer, "batch_first", False) else set()
    assert set(tally.unsupported) <= allowed, dict(tally.unsupported)
    return tally


@pytest.mark.parametrize(SIGNATURE, params(ALL_CASES))
def test_fx_equals_aten(case_id: str, layer: nn.Module, inputs: tuple, flops: int, macs: int) -> None:
    """The module rule's total equals ``count_aten``'s: FLOPs always, MACs but for the one case above."""
    fx_flops, fx_macs = fx_cost(layer, inputs)
    tally = _aten_cost(layer, inputs)
    assert tally.cost.flops == fx_flops == flops, case_id
    assert tally.cost.macs == fx_macs - _input_bias_macs_lost(layer, inputs, tally), case_id


def _lstm_decomposed(layer: nn.Module, inputs: Sequence[Any]) -> torch_flops.AtenTally:
    with torch.backends.mkldnn.flags(enabled=False):
        tally = _aten_cost(layer, inputs)
    assert "aten.mkldnn_rnn_layer" not in tally.calls
    return tally


@pytest.mark.parametrize(SIGNATURE, params(LSTM_CASES))
def test_mkldnn_lstm_equals_decomposed_lstm(case_id: str, layer: nn.Module, inputs: tuple, flops: int,
                                            macs: int) -> None:
    """With oneDNN disabled, LSTM runs as addmm + add_ + sigmoid_ + tanh_ + mul + ... (as proj_size > 0
    and packed inputs always do): the same total as the mkldnn_rnn_layer rule."""
    mkldnn = _aten_cost(layer, inputs)
    decomposed = _lstm_decomposed(layer, inputs)
    assert decomposed.cost.flops == mkldnn.cost.flops == flops, case_id
    assert decomposed.cost.macs == macs - _input_bias_macs_lost(layer, inputs, decomposed), case_id


def test_lstm_runs_mkldnn_rnn_layer_per_layer_and_direction() -> None:
    if not torch.backends.mkldnn.is_available():
        pytest.skip("PyTorch built without oneDNN")
    tally = _aten_cost(nn.LSTM(3, 4, 2, bidirectional=True), (randn(5, 2, 3),))
    assert tally.calls["aten.mkldnn_rnn_layer"] == 4  # 2 layers * 2 directions
    assert tally.cost == Cost(14_240, 7_360)  # as lstm_2_layers_bidirectional


# -- aten kernels of other devices, priced from their arguments --------------------------------------
def aten_rule_cost(op: Any, args: tuple, output: Any = None) -> Cost:
    return DEFAULT_REGISTRY.aten_rule(op).fn(OpCall(args, {}, output))


# cuDNN / MIOpen modes: 0 relu, 1 tanh, 2 LSTM, 3 GRU
CUDNN_CASES = [
    # (id, layer, mode, input data, batch_sizes)
    ("rnn_relu", nn.RNN(3, 4, nonlinearity="relu"), 0, randn(5, 2, 3), []),
    ("rnn_tanh_2_layers", nn.RNN(3, 4, 2), 1, randn(5, 2, 3), []),
    ("lstm_2_layers_bidirectional", nn.LSTM(3, 4, 2, bidirectional=True), 2, randn(5, 2, 3), []),
    ("lstm_no_bias", nn.LSTM(3, 4, bias=False), 2, randn(5, 2, 3), []),
    ("lstm_proj", nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2), 2, randn(5, 2, 3), []),
    ("lstm_proj_no_bias", nn.LSTM(3, 4, proj_size=2, bias=False), 2, randn(5, 2, 3), []),
    ("gru_packed", nn.GRU(3, 4, 2), 3, randn(10, 3), [3, 3, 2, 1, 1]),
]


@pytest.mark.parametrize("case_id, layer, mode, data, batch_sizes", [pytest.param(*c, id=c[0]) for c in CUDNN_CASES])
def test_cudnn_rnn_and_miopen_rnn(case_id: str, layer: nn.Module, mode: int, data: torch.Tensor,
                                  batch_sizes: list[int]) -> None:
    """``_cudnn_rnn`` / ``miopen_rnn`` price the whole stack as the module rule does."""
    weights = layer._flat_weights
    stride0 = len(weights) // (layer.num_layers * (2 if layer.bidirectional else 1))
    sequence = PackedSequence(data, torch.tensor(batch_sizes)) if batch_sizes else data
    module_cost = DEFAULT_REGISTRY.module_rule(layer).fn(OpCall((sequence,), {}, None, layer))  # shapes only
    expected = (module_cost.flops, module_cost.macs)
    hx, cx = None, None  # the rules read no state
    cudnn_args = (data, weights, stride0, None, hx, cx, mode, layer.hidden_size, layer.proj_size, layer.num_layers,
                  False, 0.0, False, layer.bidirectional, batch_sizes, None)
    cost = aten_rule_cost(aten._cudnn_rnn.default, cudnn_args)
    assert (cost.flops, cost.macs) == expected, case_id
    if layer.proj_size == 0:  # MIOpen has no projection
        miopen_args = (data, weights, stride0, hx, cx, mode, layer.hidden_size, layer.num_layers, False, 0.0,
                       False, layer.bidirectional, batch_sizes, None)
        cost = aten_rule_cost(aten.miopen_rnn.default, miopen_args)
        assert (cost.flops, cost.macs) == expected, case_id


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode, op, gates", [("LSTM", "_thnn_fused_lstm_cell", 4), ("GRU", "_thnn_fused_gru_cell", 3)])
def test_fused_cuda_cells(mode: str, op: str, gates: int, bias: bool) -> None:
    """The CUDA cells: two bias-free products (aten.mm), then the fused op with the biases; together
    the cell's cost. Batch 2, I = 3, H = 4."""
    b = randn(gates * 4) if bias else None
    args = (randn(2, gates * 4), randn(2, gates * 4), randn(2, 4), b, b)
    fused = aten_rule_cost(getattr(aten, op).default, args)
    products = matmul_cost(2 * gates * 4, 3) + matmul_cost(2 * gates * 4, 4)
    assert products + fused == rnn_cost(mode, 3, 4, rows=2, bias=bias)
    # LSTM: 2 rows * (13*4 + 2*16 bias adds) = 168 FLOPs, 64 MACs; GRU: 2 * (10*4 + 2*12) = 128, 48
    expected = {("LSTM", True): Cost(168, 64), ("LSTM", False): Cost(104, 0),
                ("GRU", True): Cost(128, 48), ("GRU", False): Cost(80, 0)}[(mode, bias)]
    assert fused == expected


# -- composite aten ops: their rule equals the count of what they decompose into ---------------------
def _composite_agrees(op: Any, args: tuple) -> Cost:
    output = op(*args)
    rule = aten_rule_cost(op, args, output)
    _, tally = torch_flops.count_aten(op, *args)
    assert not tally.unsupported, dict(tally.unsupported)
    assert rule == tally.cost
    return rule


@pytest.mark.parametrize("biases", [0, 1, 2])
@pytest.mark.parametrize("name, gates", [("rnn_tanh_cell", 1), ("rnn_relu_cell", 1), ("gru_cell", 3), ("lstm_cell", 4)])
def test_composite_cells(name: str, gates: int, biases: int) -> None:
    hx = [randn(2, 4), randn(2, 4)] if name == "lstm_cell" else randn(2, 4)
    b_ih, b_hh = [randn(gates * 4) if i < biases else None for i in range(2)]
    cost = _composite_agrees(getattr(aten, name).default, (randn(2, 3), hx, randn(gates * 4, 3), randn(gates * 4, 4),
                                                          b_ih, b_hh))
    # e.g. lstm_cell with both biases: 2 rows * 276 = 552
    if biases == 2:
        assert cost == rnn_cost({1: "RNN_TANH", 3: "GRU", 4: "LSTM"}[gates], 3, 4, rows=2)


def test_composite_stacks() -> None:
    lstm = nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2)
    h0, c0 = torch.zeros(4, 2, 2), torch.zeros(4, 2, 4)
    cost = _composite_agrees(aten.lstm.input, (randn(5, 2, 3), [h0, c0], lstm._flat_weights, True, 2, 0.0, False,
                                               True, False))
    assert cost == Cost(9_680, 5_120)  # as lstm_proj

    gru = nn.GRU(3, 4, 2, bias=False)
    data = packed()
    cost = _composite_agrees(aten.gru.data, (data.data, data.batch_sizes, torch.zeros(2, 3, 4), gru._flat_weights,
                                             False, 2, 0.0, False, False))
    # layer 0: 60 + 84 + 40 = 184; layer 1 (I = 4): 84 + 84 + 40 = 208; 10 * 392 = 3,920; MACs 10 * (84 + 96)
    assert cost == Cost(3_920, 1_800)

    rnn = nn.RNN(3, 4, nonlinearity="relu", bidirectional=True)
    cost = _composite_agrees(aten.rnn_relu.input, (randn(5, 2, 3), torch.zeros(2, 2, 4), rnn._flat_weights, True, 1,
                                                   0.0, False, True, False))
    assert cost == Cost(1_280, 720)  # 10 rows * 2 * 64
