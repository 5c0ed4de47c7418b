"""Hand-computed costs of upsampling and interpolation (``torch_flops/rules/resample.py``).

Per output element: nearest 0; linear 3 FLOPs / 2 MACs; bilinear 7 / 4; trilinear 15 / 8; bicubic
31 / 16; area = adaptive average pooling; antialiased modes: ``2 * points - 1`` / ``points`` with
``points`` the product of PyTorch's per-dimension windows.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from features import LANCZOS, needs_lanczos
from models import Op
from test_rules import SIGNATURE, as_module, check, op_records, params, randn, run
from torch_flops import DEFAULT_REGISTRY, Cost, OpCall, Status, count_aten
from torch_flops.rules.resample import antialias_cost, antialias_windows, interpolation_cost

aten = torch.ops.aten

# the deprecated F.upsample* functions are traced into F.interpolate (they have no __torch_function__
# hook), so they are never FX nodes of their own; their rules are checked by calling them directly
pytestmark = pytest.mark.filterwarnings("ignore:`nn.functional.upsample")


def function_cost(fn: Any, *args: Any, **kwargs: Any) -> tuple[Status, Cost]:
    """What ``fn``'s function rule says of ``fn(*args, **kwargs)``."""
    rule = DEFAULT_REGISTRY.function_rule(fn)
    assert rule is not None, fn
    if rule.known_zero:
        return Status.ZERO, Cost(0, 0)
    return Status.RULE, rule.fn(OpCall(args, kwargs, fn(*args, **kwargs)))


# -- shape-only helpers ------------------------------------------------------------------------------
def test_interpolation_cost() -> None:
    assert interpolation_cost(10, 4) == Cost(70, 40)  # 10 * (2*4 - 1), 10 * 4
    assert interpolation_cost(0, 16) == Cost(0, 0)


@pytest.mark.parametrize(
    "args, windows",
    [
        # scale 4/2 = 2, support 2: centers 1, 3 -> [0, 3), [1, 4)
        ((4, 2, 2), [3, 3]),
        # scale 2/4 = 0.5 (< 1): support 1; centers 0.25, 0.75, 1.25, 1.75 ->
        # [0, int(1.75) = 1), [int(0.25) = 0, 2), [int(0.75) = 0, 2), [int(1.25) = 1, min(int(3.25), 2) = 2)
        ((2, 4, 2), [1, 2, 2, 1]),
        # bicubic, scale_factor 0.5 -> scale 2, support 2 * 2 = 4; centers 1, 3, 5, 7 ->
        # [0, 5), [0, 7), [1, 8), [3, 8)
        ((8, 4, 4, False, 0.5), [5, 7, 7, 5]),
        # lanczos, support 3 * 2 = 6: [0, 7), [0, min(9, 8)), [0, 8), [1, 8)
        ((8, 4, 6, False, 0.5), [7, 8, 8, 7]),
        # align_corners: scale (5 - 1) / (3 - 1) = 2, support 2; centers 1, 3, 5 -> [0, 3), [1, 5), [3, 5)
        ((5, 3, 2, True), [3, 4, 2]),
    ],
)
def test_antialias_windows(args: tuple, windows: list[int]) -> None:
    assert antialias_windows(*args) == windows


def test_antialias_windows_follow_the_precision_of_the_input() -> None:
    # 7 -> 3, scale 7/3: in float32 `center + support` of output 2 rounds across 6.5, in float64 not
    assert antialias_windows(7, 3, 2, single_precision=True) == [4, 5, 4]
    assert antialias_windows(7, 3, 2, single_precision=False) == [4, 5, 3]
    # one (1, 1) plane of 2x2 outputs over windows [3, 3] x [3, 3]: points 6 * 6 = 36, 2*36 - 4 = 68
    assert antialias_cost((1, 1, 4, 4), (1, 1, 2, 2), 2) == Cost(68, 36)


# -- FX level: modules and functionals ---------------------------------------------------------------
RESAMPLE_CASES = [
    # nearest: a copy, counted 0 by the mode-dependent rules
    ("upsample_nearest_module", nn.Upsample(scale_factor=2), (randn(1, 3, 4, 4),), 0, 0),
    ("f_interpolate_nearest", lambda x: F.interpolate(x, scale_factor=2), (randn(1, 3, 4, 4),), 0, 0),
    ("f_interpolate_nearest_exact", lambda x: F.interpolate(x, size=(5, 7), mode="nearest-exact"),
     (randn(1, 3, 4, 4),), 0, 0),
    # linear: (2, 3, 5) -> (2, 3, 10) = 60 outputs * 3 = 180; MACs 60 * 2 = 120
    ("upsample_linear_module", nn.Upsample(scale_factor=2, mode="linear"), (randn(2, 3, 5),), 180, 120),
    ("f_interpolate_linear_align_corners", lambda x: F.interpolate(x, size=7, mode="linear", align_corners=True),
     (randn(1, 2, 4),), 42, 28),  # (1, 2, 7) = 14 outputs * 3 = 42; MACs 14 * 2 = 28
    # bilinear: (1, 3, 4, 4) -> (1, 3, 8, 8) = 192 outputs * 7 = 1,344; MACs 192 * 4 = 768
    ("upsample_bilinear_module", nn.Upsample(scale_factor=2, mode="bilinear"), (randn(1, 3, 4, 4),), 1_344, 768),
    ("f_interpolate_bilinear_keyword", lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"),
     (randn(1, 3, 4, 4),), 1_344, 768),  # as the module
    ("f_interpolate_bilinear_positional", lambda x: F.interpolate(x, None, 2.0, "bilinear"),
     (randn(1, 3, 4, 4),), 1_344, 768),  # as the module
    ("upsampling_bilinear2d_size", nn.UpsamplingBilinear2d(size=(5, 6)), (randn(1, 2, 3, 3),),
     420, 240),  # (1, 2, 5, 6) = 60 outputs * 7 = 420; MACs 60 * 4 = 240
    ("f_interpolate_bilinear_down", lambda x: F.interpolate(x, size=(2, 2), mode="bilinear"),
     (randn(1, 1, 4, 4),), 28, 16),  # no antialiasing: 4 outputs * 7 = 28, still 4 points each
    ("f_upsample_bilinear_traced", lambda x: F.upsample_bilinear(x, scale_factor=2),
     (randn(1, 3, 4, 4),), 1_344, 768),  # traced into F.interpolate(mode="bilinear", align_corners=True)
    # trilinear: (1, 2, 2, 3, 3) -> (1, 2, 4, 6, 6) = 288 outputs * 15 = 4,320; MACs 288 * 8 = 2,304
    ("upsample_trilinear_module", nn.Upsample(scale_factor=2, mode="trilinear"), (randn(1, 2, 2, 3, 3),),
     4_320, 2_304),
    # bicubic: (1, 2, 3, 3) -> (1, 2, 6, 6) = 72 outputs * 31 = 2,232; MACs 72 * 16 = 1,152
    ("f_interpolate_bicubic", lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"),
     (randn(1, 2, 3, 3),), 2_232, 1_152),
    ("upsample_bicubic_module", nn.Upsample(scale_factor=2, mode="bicubic", align_corners=True),
     (randn(1, 2, 3, 3),), 2_232, 1_152),  # as above
    # area = adaptive average pooling: 7 -> 3 windows [0, 3), [2, 5), [4, 7): 9 per dim, 81 per plane
    ("f_interpolate_area_2d", lambda x: F.interpolate(x, size=(3, 3), mode="area"), (randn(1, 1, 7, 7),), 81, 81),
    ("adaptive_avg_pool_2d_same", nn.AdaptiveAvgPool2d(3), (randn(1, 1, 7, 7),), 81, 81),  # the same 81
    ("f_interpolate_area_1d", lambda x: F.interpolate(x, size=3, mode="area"), (randn(1, 1, 7),), 9, 9),  # 3+3+3
    # scale_factor 0.5: 8 -> 4, windows of 2: 8 per dim, 64 per plane * 2 planes = 128
    ("f_interpolate_area_scale", lambda x: F.interpolate(x, scale_factor=0.5, mode="area"),
     (randn(1, 2, 8, 8),), 128, 128),
    ("upsample_area_3d_module", nn.Upsample(size=2, mode="area"), (randn(1, 1, 4, 4, 4),),
     64, 64),  # windows of 2: 4 per dim, 4**3 = 64
    # antialiased: windows from test_antialias_windows
    ("f_interpolate_bilinear_aa_down", lambda x: F.interpolate(x, size=(2, 2), mode="bilinear", antialias=True),
     (randn(1, 1, 4, 4),), 68, 36),  # 3 * 3 = 9 points per output: 4 * (2*9 - 1) = 68; MACs 4 * 9 = 36
    ("f_interpolate_bilinear_aa_up", lambda x: F.interpolate(x, size=(4, 4), mode="bilinear", antialias=True),
     (randn(1, 1, 2, 2),), 56, 36),  # windows [1, 2, 2, 1]: 6 * 6 = 36 points; 2*36 - 16 outputs = 56
    ("f_interpolate_bicubic_aa", lambda x: F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True),
     (randn(1, 1, 8, 8),), 1_136, 576),  # windows [5, 7, 7, 5]: 24 * 24 = 576 points; 2*576 - 16 = 1,136
    ("f_interpolate_lanczos", lambda x: F.interpolate(x, scale_factor=0.5, mode="lanczos", antialias=True),
     (randn(1, 1, 8, 8),), 1_784, 900, needs_lanczos),  # windows [7, 8, 8, 7]: 30 * 30 = 900 points; 2*900 - 16 = 1,784
    ("f_interpolate_bilinear_aa_align_corners",
     lambda x: F.interpolate(x, size=(3, 3), mode="bilinear", align_corners=True, antialias=True),
     (randn(2, 1, 5, 5),), 2 * (2 * 81 - 9), 2 * 81),  # windows [3, 4, 2]: 9 * 9 = 81 points per plane, 2 planes
    # 7 -> 3: float32 windows [4, 5, 4] (13 per dim), float64 [4, 5, 3] (12)
    ("f_interpolate_bilinear_aa_float32", lambda x: F.interpolate(x, size=(3, 3), mode="bilinear", antialias=True),
     (randn(1, 1, 7, 7),), 329, 169),  # 13 * 13 = 169 points; 2*169 - 9 = 329
    ("f_interpolate_bilinear_aa_float64", lambda x: F.interpolate(x, size=(3, 3), mode="bilinear", antialias=True),
     (randn(1, 1, 7, 7).double(),), 279, 144),  # 12 * 12 = 144 points; 2*144 - 9 = 279
]


@pytest.mark.parametrize(SIGNATURE, params(RESAMPLE_CASES))
def test_resample(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


def test_upsampling_nearest2d_is_known_zero() -> None:
    (record,) = op_records(run(nn.UpsamplingNearest2d(scale_factor=2), (randn(1, 3, 4, 4),)))
    assert record.op == "call_module" and record.status is Status.ZERO and (record.flops, record.macs) == (0, 0)


def test_deprecated_upsample_function_rules() -> None:
    x = randn(1, 3, 4, 4)
    # bilinear, align_corners=True: (1, 3, 8, 8) = 192 outputs * 7 = 1,344; MACs 192 * 4 = 768
    assert function_cost(F.upsample_bilinear, x, scale_factor=2) == (Status.RULE, Cost(1_344, 768))
    assert function_cost(F.upsample_bilinear, x, (8, 8)) == (Status.RULE, Cost(1_344, 768))  # size positional
    # bicubic: 192 outputs * 31 = 5,952; MACs 192 * 16 = 3,072
    assert function_cost(F.upsample, x, None, 2, "bicubic") == (Status.RULE, Cost(5_952, 3_072))
    assert function_cost(F.upsample, x, scale_factor=2) == (Status.RULE, Cost(0, 0))  # nearest: counted 0
    assert function_cost(F.upsample_nearest, x, scale_factor=2) == (Status.ZERO, Cost(0, 0))  # known zero


def test_mode_dependent_nearest_is_counted_zero() -> None:
    (record,) = op_records(run(nn.Upsample(scale_factor=2), (randn(1, 3, 4, 4),)))
    assert record.status is Status.RULE and (record.flops, record.macs) == (0, 0)


def test_area_equals_adaptive_avg_pooling() -> None:
    x = randn(2, 3, 9, 7)
    area = run(lambda t: F.interpolate(t, size=(4, 3), mode="area"), (x,))
    pool = run(nn.AdaptiveAvgPool2d((4, 3)), (x,))
    assert (area.total_flops, area.total_macs) == (pool.total_flops, pool.total_macs) != (0, 0)


# -- aten level --------------------------------------------------------------------------------------
def aten_cost(fn: Any, *args: Any) -> tuple[Cost, dict]:
    _, tally = count_aten(fn, *args)
    assert not tally.unsupported, dict(tally.unsupported)
    return tally.cost, dict(tally.calls)


ATEN_CASES = [
    # (id, callable, inputs, expected cost, the aten op it dispatched)
    ("nearest1d", lambda x: aten.upsample_nearest1d(x, [6]), (randn(1, 2, 3),), Cost(0, 0), "aten.upsample_nearest1d"),
    ("nearest2d_vec", lambda x: aten.upsample_nearest2d.vec(x, None, [2.0, 2.0]), (randn(1, 2, 3, 3),),
     Cost(0, 0), "aten.upsample_nearest2d"),
    ("nearest3d", lambda x: aten.upsample_nearest3d(x, [4, 4, 4]), (randn(1, 1, 2, 2, 2),), Cost(0, 0),
     "aten.upsample_nearest3d"),
    ("nearest_exact1d", lambda x: aten._upsample_nearest_exact1d(x, [5]), (randn(1, 2, 3),), Cost(0, 0),
     "aten._upsample_nearest_exact1d"),
    ("nearest_exact2d", lambda x: aten._upsample_nearest_exact2d(x, [5, 5]), (randn(1, 2, 3, 3),), Cost(0, 0),
     "aten._upsample_nearest_exact2d"),
    ("nearest_exact3d", lambda x: aten._upsample_nearest_exact3d(x, [3, 3, 3]), (randn(1, 1, 2, 2, 2),), Cost(0, 0),
     "aten._upsample_nearest_exact3d"),
    ("linear1d", lambda x: aten.upsample_linear1d(x, [10], False), (randn(2, 3, 5),),
     Cost(180, 120), "aten.upsample_linear1d"),  # 60 outputs * 3, * 2
    ("bilinear2d", lambda x: aten.upsample_bilinear2d(x, [8, 8], False), (randn(1, 3, 4, 4),),
     Cost(1_344, 768), "aten.upsample_bilinear2d"),  # 192 * 7, * 4
    ("bilinear2d_vec", lambda x: aten.upsample_bilinear2d.vec(x, None, True, [2.0, 2.0]), (randn(1, 3, 4, 4),),
     Cost(1_344, 768), "aten.upsample_bilinear2d"),  # 192 * 7, * 4
    ("trilinear3d", lambda x: aten.upsample_trilinear3d(x, [4, 6, 6], False), (randn(1, 2, 2, 3, 3),),
     Cost(4_320, 2_304), "aten.upsample_trilinear3d"),  # 288 * 15, * 8
    ("bicubic2d", lambda x: aten.upsample_bicubic2d(x, [6, 6], False), (randn(1, 2, 3, 3),),
     Cost(2_232, 1_152), "aten.upsample_bicubic2d"),  # 72 * 31, * 16
    ("bilinear2d_aa", lambda x: aten._upsample_bilinear2d_aa(x, [2, 2], False), (randn(1, 1, 4, 4),),
     Cost(68, 36), "aten._upsample_bilinear2d_aa"),  # 9 points per output: 4 * 17, 4 * 9
    # 5 -> 2 with scale factors 0.45: scale 1/0.45, support 2.22; centers 1.11, 3.33 -> [0, 3), [1, 5):
    # windows [3, 4], 7 * 7 = 49 points; 2*49 - 4 outputs = 94 (without the factors: 5/2, [4, 4])
    ("bilinear2d_aa_scales", lambda x: aten._upsample_bilinear2d_aa(x, [2, 2], False, 0.45, 0.45),
     (randn(1, 1, 5, 5),), Cost(94, 49), "aten._upsample_bilinear2d_aa"),
    ("bicubic2d_aa", lambda x: aten._upsample_bicubic2d_aa(x, [4, 4], False, 0.5, 0.5), (randn(1, 1, 8, 8),),
     Cost(1_136, 576), "aten._upsample_bicubic2d_aa"),  # windows [5, 7, 7, 5]: 576 points
]


@pytest.mark.parametrize("case_id, fn, inputs, cost, op", [pytest.param(*c, id=c[0]) for c in ATEN_CASES])
def test_aten_ops(case_id: str, fn: Any, inputs: tuple, cost: Cost, op: str) -> None:
    measured, calls = aten_cost(fn, *inputs)
    assert measured == cost, case_id
    assert op in calls, calls


def test_aten_antialias_vec_overload_reads_scale_factors() -> None:
    # the .vec overloads decompose before a dispatch mode sees them; their rule still reads their schema
    x = randn(1, 1, 5, 5)
    out = aten._upsample_bilinear2d_aa(x, [2, 2], False, 0.45, 0.45)
    rule = DEFAULT_REGISTRY.aten_rule(aten._upsample_bilinear2d_aa.vec)
    # scale 1/0.45: windows [3, 4], 49 points, 2*49 - 4 = 94
    assert rule.fn(OpCall((x, None, False, [0.45, 0.45]), {}, out)) == Cost(94, 49)
    keywords = {"output_size": None, "align_corners": False, "scale_factors": [0.45, 0.45]}
    assert rule.fn(OpCall((x,), keywords, out)) == Cost(94, 49)
    # without scale factors: scale 5/2, support 2.5; centers 1.25, 3.75 -> [0, 4), [1, 5): 8 * 8 = 64 points
    assert rule.fn(OpCall((x, [2, 2], False, None), {}, out)) == Cost(2 * 64 - 4, 64)
    assert rule.fn(OpCall((x, [2, 2], False), {}, out)) == Cost(2 * 64 - 4, 64)  # .default, no scales


def test_interpolate_passes_scale_factors_unless_recomputed() -> None:
    x = randn(1, 1, 5, 5)
    # as above: 94 / 49 with the scale factor, 124 / 64 when F.interpolate recomputes it from the size
    check("scale_factor", lambda t: F.interpolate(t, scale_factor=0.45, mode="bilinear", antialias=True), (x,), 94, 49)
    check("recomputed", lambda t: F.interpolate(t, scale_factor=0.45, mode="bilinear", antialias=True,
                                                recompute_scale_factor=True), (x,), 124, 64)
    check("size", lambda t: F.interpolate(t, size=2, mode="bilinear", antialias=True), (x,), 124, 64)


# -- agreement: the FX-level total equals the aten-level count of the same model ---------------------
AGREEMENT_CASES = [
    (nn.Upsample(scale_factor=2), (randn(1, 3, 4, 4),)),
    (nn.Upsample(scale_factor=2, mode="nearest-exact"), (randn(1, 3, 4),)),
    (nn.Upsample(size=(3, 5, 4), mode="nearest"), (randn(1, 2, 2, 2, 2),)),
    (nn.UpsamplingNearest2d(size=(5, 7)), (randn(1, 3, 4, 4),)),
    (nn.Upsample(scale_factor=3, mode="linear", align_corners=False), (randn(2, 3, 5),)),
    (nn.Upsample(scale_factor=(2, 1.5), mode="bilinear"), (randn(1, 3, 4, 4),)),
    (nn.UpsamplingBilinear2d(scale_factor=2), (randn(1, 3, 4, 4),)),
    (nn.Upsample(size=(3, 5, 7), mode="trilinear", align_corners=True), (randn(1, 2, 2, 3, 3),)),
    (nn.Upsample(scale_factor=1.7, mode="bicubic", recompute_scale_factor=True), (randn(1, 2, 5, 5),)),
    (nn.Upsample(size=(3, 4), mode="area"), (randn(1, 2, 7, 9),)),
    (nn.Upsample(scale_factor=0.5, mode="area"), (randn(1, 2, 6, 6, 6),)),
    (Op(lambda x: F.interpolate(x, scale_factor=0.37, mode="bilinear", antialias=True)), (randn(2, 3, 19, 23),)),
    (Op(lambda x: F.interpolate(x, scale_factor=0.37, mode="bilinear", antialias=True, recompute_scale_factor=True)),
     (randn(2, 3, 19, 23),)),
    (Op(lambda x: F.interpolate(x, size=(11, 5), mode="bicubic", antialias=True)), (randn(1, 2, 17, 13),)),
    (Op(lambda x: F.interpolate(x, size=(11, 5), mode="bicubic", antialias=True)), (randn(1, 2, 17, 13).double(),)),
    pytest.param(Op(lambda x: F.interpolate(x, scale_factor=(1.5, 0.6), mode="lanczos", antialias=True)), (randn(1, 2, 9, 13),),
                 marks=needs_lanczos),
    (Op(lambda x: F.interpolate(x, size=(7, 3), mode="bilinear", antialias=True, align_corners=True)),
     (randn(1, 1, 5, 9),)),
]


@pytest.mark.parametrize("model, inputs", AGREEMENT_CASES, ids=[f"case{i}" for i in range(len(AGREEMENT_CASES))])
def test_fx_total_agrees_with_aten_count(model: Any, inputs: tuple) -> None:
    module = as_module(model)
    counter = run(module, inputs)
    assert not counter.unsupported
    _, tally = count_aten(module, *inputs)
    assert not tally.unsupported, dict(tally.unsupported)
    assert (counter.total_flops, counter.total_macs) == (tally.cost.flops, tally.cost.macs)


def test_interpolate_dispatches_only_priced_aten_ops() -> None:
    """Every mode of F.interpolate on every input rank it accepts reaches an aten op with a rule."""
    modes = {
        3: ["nearest", "nearest-exact", "linear", "area"],
        4: ["nearest", "nearest-exact", "bilinear", "bicubic", "area"],
        5: ["nearest", "nearest-exact", "trilinear", "area"],
    }
    for rank, names in modes.items():
        x = randn(1, 2, *([5] * (rank - 2)))
        for mode in names:
            _, tally = count_aten(lambda t: F.interpolate(t, size=[3] * (rank - 2), mode=mode), x)
            assert not tally.unsupported, (rank, mode, dict(tally.unsupported))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mode in ("bilinear", "bicubic", *(("lanczos",) if LANCZOS else ())):
            _, tally = count_aten(lambda t: F.interpolate(t, size=(3, 3), mode=mode, antialias=True), randn(1, 2, 5, 5))
            assert not tally.unsupported and tally.cost.flops > 0, mode
