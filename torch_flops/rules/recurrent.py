"""Recurrent layers: ``nn.RNN`` (tanh, relu), ``nn.LSTM`` (with ``proj_size``), ``nn.GRU`` and their cells.

A recurrent layer is priced as what PyTorch's decomposed CPU implementation computes, with the linear
and elementwise conventions. For every time step, layer, direction and batch element (a "row"; a
``PackedSequence`` has ``sum(batch_sizes)`` rows), with ``G`` gates (RNN 1, GRU 3, LSTM 4), hidden
size ``H``, layer input size ``I`` and fed-back state size ``R`` (``proj_size`` if set, else ``H``):

- input projection ``x W_ih^T``: ``G H (2I - 1)`` FLOPs, ``G H I`` MACs;
- hidden projection ``h W_hh^T``: ``G H (2R - 1)`` FLOPs, ``G H R`` MACs. It is counted at every
  step, the first included: PyTorch multiplies the initial state even when it is zero;
- with ``bias=True``: ``b_ih`` and ``b_hh``, ``2 G H`` adds, counted as MACs too (the adds of
  ``aten.addmm``, as a ``Linear`` bias);
- the cell's pointwise ops, 0 MACs (one FLOP per element and op, activations at their usual price):

  ====  ====  =================================================================================
  cell  per   ops
  ====  ====  =================================================================================
  RNN   2 H   ``igates + hgates``, ``tanh`` (or ``relu``)
  GRU   10 H  ``r = sigmoid(i_r + h_r)`` 2, ``z = sigmoid(i_z + h_z)`` 2,
                ``n = tanh(i_n + r * h_n)`` 3, ``h' = n + z * (h - n)`` 3
  LSTM  13 H  ``igates + hgates`` 4, 3 sigmoids 3, ``tanh(g)`` 1, ``c' = f * c + i * g`` 3,
                ``tanh(c')`` 1, ``h' = o * tanh(c')`` 1
  ====  ====  =================================================================================

- LSTM with ``proj_size = P``: the projection ``h' W_hr^T`` (no bias): ``P (2H - 1)`` FLOPs,
  ``P H`` MACs.

Layer 0 reads ``I = input_size``; deeper layers read the previous layer's output,
``I = num_directions * R``. A cell (``nn.RNNCell``, ``nn.LSTMCell``, ``nn.GRUCell``) is one step of
one layer and direction; its rows are the batch (1 for an unbatched input).

On CPU, ``nn.LSTM`` runs as one ``aten.mkldnn_rnn_layer`` per layer and direction (oneDNN). It is
priced with the same formula, and equals the decomposed path that PyTorch takes with oneDNN disabled,
with ``proj_size > 0`` or with a ``PackedSequence`` (``addmm`` + ``add_`` + ``sigmoid_`` ...). The CUDA
kernels (``_cudnn_rnn``, ``miopen_rnn``, ``_thnn_fused_lstm_cell``, ``_thnn_fused_gru_cell``) and the
composite aten ops (``lstm``, ``gru``, ``rnn_tanh``, ``lstm_cell`` ...) are priced with it too.

Worked example: ``nn.LSTM(3, 4)`` on ``(5, 2, 3)`` (10 rows, G H = 16): per row, input projection
16 * (2*3 - 1) = 80, hidden projection 16 * (2*4 - 1) = 112, biases 2 * 16 = 32, pointwise 13 * 4 = 52,
so 276; total 10 * 276 = 2,760 FLOPs. MACs per row 16*3 + 16*4 + 32 = 144; total 1,440.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from torch_flops.records import ZERO_COST, Cost
from torch_flops.registry import OpCall, RuleFn, aten_ops, aten_rule, module_rule, prod
from torch_flops.rules.linear import matmul_cost

# cell kind -> (gates G, pointwise FLOPs per hidden unit)
_CELLS: dict[str, tuple[int, int]] = {
    "RNN_TANH": (1, 2),
    "RNN_RELU": (1, 2),
    "GRU": (3, 10),
    "LSTM": (4, 13),
}

# the integer ``mode`` of the aten kernels (cuDNN, MIOpen and oneDNN number their cells alike)
_KERNEL_MODES: dict[int, str] = {0: "RNN_RELU", 1: "RNN_TANH", 2: "LSTM", 3: "GRU"}


def _scaled(cost: Cost, times: int) -> Cost:
    return Cost(cost.flops * times, cost.macs * times)


def cell_pointwise_cost(mode: str, hidden_size: int, biases: int = 2) -> Cost:
    """One row of a cell after its two matrix products: ``biases * G * H`` bias adds (FLOPs and MACs)
    plus the pointwise ops (RNN ``2H``, GRU ``10H``, LSTM ``13H``; 0 MACs). ``biases`` is how many of
    ``b_ih`` / ``b_hh`` are given (0, 1 or 2)."""
    gates, pointwise = _CELLS[mode]
    bias_adds = biases * gates * hidden_size
    return Cost(bias_adds + pointwise * hidden_size, bias_adds)


def rnn_cost(
    mode: str,
    input_size: int,
    hidden_size: int,
    rows: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    bias: bool = True,
    proj_size: int = 0,
) -> Cost:
    """A whole recurrent layer stack, or one cell step when ``num_layers=1`` (pure ints).

    ``mode`` is ``"RNN_TANH"``, ``"RNN_RELU"``, ``"GRU"`` or ``"LSTM"``; ``rows`` is time steps x batch
    (``sum(batch_sizes)`` for a packed sequence, the batch for a cell). With ``G`` gates, ``D``
    directions, ``R = proj_size or H`` and ``I_l`` the input size of layer ``l`` (``input_size``, then
    ``D * R``)::

        FLOPs = rows * D * sum_l [ G H (2 I_l - 1) + G H (2R - 1) + 2 G H [bias] + c H + P (2H - 1) ]
        MACs  = rows * D * sum_l [ G H I_l + G H R + 2 G H [bias] + P H ]

    with ``c`` = 2 (RNN), 10 (GRU), 13 (LSTM) and ``P = proj_size``.
    """
    if mode not in _CELLS:
        raise ValueError(f"unknown recurrent cell {mode!r}; expected one of {sorted(_CELLS)}")
    gates, _ = _CELLS[mode]
    directions = 2 if bidirectional else 1
    fed_back = proj_size or hidden_size
    per_row = ZERO_COST
    layer_input = input_size
    for _ in range(num_layers):
        layer = (
            matmul_cost(gates * hidden_size, layer_input)
            + matmul_cost(gates * hidden_size, fed_back)
            + cell_pointwise_cost(mode, hidden_size, 2 if bias else 0)
            + matmul_cost(proj_size, hidden_size)
        )
        per_row = per_row + _scaled(layer, directions)
        layer_input = directions * fed_back
    return _scaled(per_row, rows)


def _rows(data: torch.Tensor) -> int:
    """Rows of a recurrent input: every dimension but the features (``(T, B, I)`` -> ``T * B``,
    packed ``(sum(batch_sizes), I)`` -> ``sum(batch_sizes)``, a cell's ``(B, I)`` -> ``B``)."""
    return prod(data.shape[:-1])


def _input_data(value: Any) -> torch.Tensor:
    return value.data if isinstance(value, PackedSequence) else value


# ([T, B, D*R] | packed, h_n (, c_n)) = RNN/LSTM/GRU([T, B, I] | [B, T, I] | [T, I] | packed, hx)
# nn.RNNBase covers nn.RNN, nn.LSTM and nn.GRU (its ``mode`` names the cell)
@module_rule(nn.RNNBase)
def rnn_module(call: OpCall) -> Cost:
    module = call.module
    return rnn_cost(
        module.mode,
        module.input_size,
        module.hidden_size,
        _rows(_input_data(call.arg(0, "input"))),
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        bias=module.bias,
        proj_size=getattr(module, "proj_size", 0),
    )


def _cell_mode(module: nn.Module) -> str:
    if isinstance(module, nn.LSTMCell):
        return "LSTM"
    if isinstance(module, nn.GRUCell):
        return "GRU"
    return "RNN_RELU" if getattr(module, "nonlinearity", "tanh") == "relu" else "RNN_TANH"


# h' | (h', c') = RNNCell/GRUCell/LSTMCell([B, I] | [I], hx)
@module_rule(nn.RNNCell, nn.LSTMCell, nn.GRUCell)
def rnn_cell_module(call: OpCall) -> Cost:
    module = call.module
    rows = _rows(call.arg(0, "input"))
    return rnn_cost(_cell_mode(module), module.input_size, module.hidden_size, rows, bias=module.bias)


# -- aten kernels ---------------------------------------------------------------------------------------
# (output, hy, cy, workspace) = mkldnn_rnn_layer(input [T, B, I] | [B, T, I], w_ih [G H, I], w_hh [G H, H],
#     b_ih, b_hh, hx, cx, reverse, batch_sizes, mode, hidden_size, num_layers, has_biases, bidirectional,
#     batch_first, train): one layer, one direction
@aten_rule(*aten_ops("mkldnn_rnn_layer"))
def mkldnn_rnn_layer(call: OpCall) -> Cost:
    data = call.arg(0, "input")
    return rnn_cost(
        _KERNEL_MODES[call.arg(9, "mode")],
        data.shape[-1],
        call.arg(10, "hidden_size"),
        _rows(data),
        bias=bool(call.arg(12, "has_biases")),
    )


# (output, hy, cy, reserve, weight_buf) = _cudnn_rnn(input [T, B, I] | packed [sum, I], weight[], weight_stride0,
#     weight_buf, hx, cx, mode, hidden_size, proj_size, num_layers, batch_first, dropout, train, bidirectional,
#     batch_sizes, dropout_state): the whole stack; per layer and direction the weights are
#     [w_ih, w_hh, (b_ih, b_hh), (w_hr)], so weight_stride0 is 2 or 4, or 3 or 5 with a projection
@aten_rule(*aten_ops("_cudnn_rnn"))
def cudnn_rnn(call: OpCall) -> Cost:
    data = call.arg(0, "input")
    proj_size = call.arg(8, "proj_size")
    return rnn_cost(
        _KERNEL_MODES[call.arg(6, "mode")],
        data.shape[-1],
        call.arg(7, "hidden_size"),
        _rows(data),
        num_layers=call.arg(9, "num_layers"),
        bidirectional=bool(call.arg(13, "bidirectional")),
        bias=call.arg(2, "weight_stride0") - (1 if proj_size else 0) == 4,
        proj_size=proj_size,
    )


# (output, hy, cy, reserve, weight_buf) = miopen_rnn(input, weight[], weight_stride0, hx, cx, mode, hidden_size,
#     num_layers, batch_first, dropout, train, bidirectional, batch_sizes, dropout_state); no projection
@aten_rule(*aten_ops("miopen_rnn"))
def miopen_rnn(call: OpCall) -> Cost:
    data = call.arg(0, "input")
    return rnn_cost(
        _KERNEL_MODES[call.arg(5, "mode")],
        data.shape[-1],
        call.arg(6, "hidden_size"),
        _rows(data),
        num_layers=call.arg(7, "num_layers"),
        bidirectional=bool(call.arg(11, "bidirectional")),
        bias=call.arg(2, "weight_stride0") == 4,
    )


def _bias_count(call: OpCall, first: int, names: tuple[str, str]) -> int:
    """How many of the two bias arguments, at positions ``first`` and ``first + 1``, are given."""
    return sum(call.arg(first + i, name, None) is not None for i, name in enumerate(names))


_FUSED_BIASES = ("input_bias", "hidden_bias")


# (hy, cy, workspace) = _thnn_fused_lstm_cell(input_gates [B, 4H], hidden_gates [B, 4H], cx [B, H],
#     input_bias=None, hidden_bias=None): the CUDA cell after its two bias-free products (aten.mm)
@aten_rule(*aten_ops("_thnn_fused_lstm_cell"))
def fused_lstm_cell(call: OpCall) -> Cost:
    cx = call.arg(2, "cx")
    return _scaled(cell_pointwise_cost("LSTM", cx.shape[-1], _bias_count(call, 3, _FUSED_BIASES)), _rows(cx))


# (hy, workspace) = _thnn_fused_gru_cell(input_gates [B, 3H], hidden_gates [B, 3H], hx [B, H],
#     input_bias=None, hidden_bias=None)
@aten_rule(*aten_ops("_thnn_fused_gru_cell"))
def fused_gru_cell(call: OpCall) -> Cost:
    hx = call.arg(2, "hx")
    return _scaled(cell_pointwise_cost("GRU", hx.shape[-1], _bias_count(call, 3, _FUSED_BIASES)), _rows(hx))


# Composite aten ops. Under a dispatch mode they arrive decomposed (addmm, mkldnn_rnn_layer, ...); these
# entries serve modes that keep them.
def _cell_aten(mode: str) -> RuleFn:
    # h' | (h', c') = <cell>(input [B, I] | [I], hx, w_ih [G H, I], w_hh [G H, H], b_ih=None, b_hh=None)
    def rule(call: OpCall) -> Cost:
        w_ih, w_hh = call.arg(2, "w_ih"), call.arg(3, "w_hh")
        rows, hidden_size = _rows(call.arg(0, "input")), w_hh.shape[1]
        # b_ih and b_hh may be given independently: G H adds (and MACs) per row for each
        bias_adds = rows * _bias_count(call, 4, ("b_ih", "b_hh")) * w_hh.shape[0]
        return rnn_cost(mode, w_ih.shape[1], hidden_size, rows, bias=False) + Cost(bias_adds, bias_adds)

    rule.__name__ = rule.__qualname__ = f"{mode.lower()}_cell_aten"
    return rule


for _name, _mode in (("rnn_tanh_cell", "RNN_TANH"), ("rnn_relu_cell", "RNN_RELU"), ("lstm_cell", "LSTM"),
                     ("gru_cell", "GRU")):
    aten_rule(*aten_ops(_name))(_cell_aten(_mode))


def _stack_cost(mode: str, data: torch.Tensor, params: list[torch.Tensor], has_biases: bool, num_layers: int,
                bidirectional: bool) -> Cost:
    """``params`` hold, per layer and direction, ``[w_ih, w_hh (G H, R), (b_ih, b_hh), (w_hr (P, H))]``."""
    gates, _ = _CELLS[mode]
    per_layer = len(params) // (num_layers * (2 if bidirectional else 1))
    proj_size = params[per_layer - 1].shape[0] if per_layer == (5 if has_biases else 3) else 0
    return rnn_cost(mode, data.shape[-1], params[1].shape[0] // gates, _rows(data), num_layers=num_layers,
                    bidirectional=bidirectional, bias=has_biases, proj_size=proj_size)


def _stack_aten(mode: str, packed: bool) -> RuleFn:
    if packed:
        # <op>.data(data [sum, I], batch_sizes, hx, params[], has_biases, num_layers, dropout, train, bidirectional)
        def rule(call: OpCall) -> Cost:
            return _stack_cost(mode, call.arg(0, "data"), call.arg(3, "params"), call.arg(4, "has_biases"),
                               call.arg(5, "num_layers"), call.arg(8, "bidirectional"))
    else:
        # <op>.input(input [T, B, I] | [B, T, I], hx, params[], has_biases, num_layers, dropout, train,
        #     bidirectional, batch_first)
        def rule(call: OpCall) -> Cost:
            return _stack_cost(mode, call.arg(0, "input"), call.arg(2, "params"), call.arg(3, "has_biases"),
                               call.arg(4, "num_layers"), call.arg(7, "bidirectional"))

    rule.__name__ = rule.__qualname__ = f"{mode.lower()}_{'data' if packed else 'input'}_aten"
    return rule


for _name, _mode in (("rnn_tanh", "RNN_TANH"), ("rnn_relu", "RNN_RELU"), ("lstm", "LSTM"), ("gru", "GRU")):
    for _packet in aten_ops(_name):
        for _overload, _packed in (("input", False), ("data", True)):
            if _overload in _packet.overloads():
                aten_rule(getattr(_packet, _overload))(_stack_aten(_mode, _packed))
