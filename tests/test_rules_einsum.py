"""``torch.einsum``: hand-computed costs, and agreement with what einsum really dispatches.

The formula is in ``torch_flops/rules/einsum.py``'s docstring: ATen contracts the operands pairwise,
left to right; before each pair, non-output labels held by one operand only are summed out (``n - 1``
adds per output); a pair with labels to contract is a ``bmm`` (``out_numel * (2k - 1)`` FLOPs,
``out_numel * k`` MACs), one without is a ``mul`` (``out_numel`` FLOPs). A single operand is one
``sum`` over its non-output labels.

Every hand case is checked three ways: the shape-only :func:`einsum_cost`, the FX-level rule (a graph
whose einsum node is priced by the rule, status ``RULE``), and the aten-level count of the ops einsum
dispatches (:func:`torch_flops.count_aten`). The agreement tests then check rule == aten count on more
equations and on random ones (hypothesis).
"""

from __future__ import annotations

import doctest
from collections.abc import Sequence
from typing import Any

import pytest
import torch
import torch.backends.opt_einsum  # `import torch` does not import it on torch 2.4
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import torch_flops
from torch_flops import Status, TorchFLOPsByFX
from torch_flops.records import Cost
from torch_flops.registry import DEFAULT_REGISTRY, OpCall
from torch_flops.rules import einsum as einsum_rules
from torch_flops.rules.einsum import einsum_cost


# -- helpers -----------------------------------------------------------------------------------------
class Einsum(nn.Module):
    """``forward(a[, b[, c[, d]]])`` calls ``torch.einsum`` in one of its three forms:
    ``"args"`` ``einsum(eq, a, b)``, ``"list"`` ``einsum(eq, [a, b])``, ``"sublist"``
    ``einsum(a, [0, 1], b, [1, 2], [0, 2])`` (then ``equation`` is the list of sublists)."""

    def __init__(self, equation: Any, arity: int, form: str = "args") -> None:
        super().__init__()
        self.equation = equation
        self.arity = arity
        self.form = form

    def forward(self, a: torch.Tensor, b: Any = None, c: Any = None, d: Any = None) -> torch.Tensor:
        operands = (a, b, c, d)[: self.arity]
        if self.form == "list":
            return torch.einsum(self.equation, list(operands))
        if self.form == "sublist":
            interleaved = [x for pair in zip(operands, self.equation) for x in pair]
            return torch.einsum(*interleaved, *self.equation[len(operands) :])
        return torch.einsum(self.equation, *operands)


def fx_cost(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Cost:
    """The FX-level total; the einsum node must be priced by its own rule, not by the fallback."""
    counter = TorchFLOPsByFX(model)
    counter.propagate(*inputs)
    einsum_nodes = [r for r in counter.records if r.op == "call_function"]
    assert [r.status for r in einsum_nodes] == [Status.RULE], [(r.target, r.status) for r in einsum_nodes]
    return Cost(counter.total_flops, counter.total_macs)


def aten_cost(equation: str, inputs: Sequence[torch.Tensor]) -> Cost:
    """What ``torch.einsum`` dispatches, priced by the aten rules; every aten op must have a rule."""
    _, tally = torch_flops.count_aten(torch.einsum, equation, *inputs)
    assert not tally.unsupported, tally.unsupported
    return tally.cost


def tensors(shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    return [torch.randn(tuple(shape)) for shape in shapes]


@pytest.fixture
def left_to_right():
    """PyTorch's own order: no opt_einsum path (the hand arithmetic of 3+ operands assumes it)."""
    with torch.backends.opt_einsum.flags(enabled=False):
        yield


# -- hand-computed table -----------------------------------------------------------------------------
# (id, equation, shapes, FLOPs, MACs)
HAND_CASES = [
    # two operands, something to contract: one bmm of out_numel dot products of length k
    ("matmul", "ij,jk->ik", [(2, 3), (3, 4)], 40, 24),  # 2*4 = 8 outputs * (2*3 - 1) = 40; MACs 8*3 = 24
    ("matmul_implicit", "ij,jk", [(2, 3), (3, 4)], 40, 24),  # output "ik" (labels seen once, sorted)
    ("matmul_spaces", "i j, j k -> i k", [(2, 3), (3, 4)], 40, 24),  # spaces are ignored
    ("batched_matmul", "bij,bjk->bik", [(2, 3, 4), (2, 4, 5)],
     210, 120),  # 2*3*5 = 30 outputs * (2*4 - 1) = 210; MACs 30*4 = 120
    ("dot", "i,i->", [(6,), (6,)], 11, 6),  # 1 output * (2*6 - 1) = 11; MACs 6
    ("frobenius_dot", "ij,ij->", [(2, 3), (2, 3)], 11, 6),  # k = 2*3 = 6: 1 * 11; MACs 6
    ("batched_dot", "bi,bi->b", [(3, 4), (3, 4)], 21, 12),  # 3 outputs * (2*4 - 1) = 21; MACs 3*4 = 12
    ("matrix_vector", "ij,j->i", [(3, 4), (4,)], 21, 12),  # 3 * 7 = 21; MACs 12
    ("contract_two_labels", "ijk,jkl->il", [(2, 3, 4), (3, 4, 5)],
     230, 120),  # k = 3*4 = 12; 2*5 = 10 outputs * (2*12 - 1) = 230; MACs 10*12 = 120
    # two operands, nothing to contract: one elementwise mul of out_numel
    ("outer", "i,j->ij", [(2,), (3,)], 6, 0),  # 2*3 = 6 products
    ("outer_implicit", "i,j", [(2,), (3,)], 6, 0),  # 6
    ("hadamard", "ij,ij->ij", [(2, 3), (2, 3)], 6, 0),  # 6
    ("broadcast_row", "ij,j->ij", [(2, 3), (3,)], 6, 0),  # 6
    ("batched_outer", "bi,bj->bij", [(2, 3), (2, 4)], 24, 0),  # 2*3*4 = 24
    # labels held by one operand only and not in the output are summed out first
    ("sum_then_matvec", "ij,jk->i", [(2, 3), (3, 4)],
     19, 6),  # sum k out of (3, 4): 3 * (4 - 1) = 9; then 2 outputs * (2*3 - 1) = 10: 19; MACs 2*3 = 6
    ("sum_both_then_mul", "ij,kl->", [(2, 3), (4, 5)],
     25, 0),  # (2, 3) -> 1: 6 - 1 = 5; (4, 5) -> 1: 20 - 1 = 19; then 1 mul: 5 + 19 + 1 = 25
    ("size_one_broadcasts", "ij,jk->ik", [(2, 1), (3, 4)],
     16, 0),  # j has size 1 in the first: sum j out of (3, 4): 4 * (3 - 1) = 8; mul 2*4 = 8: 16
    ("size_one_contracted", "ij,jk->ik", [(2, 1), (1, 4)], 8, 0),  # j is 1 everywhere: a mul, 2*4 = 8
    # one operand: 0 without a non-output label, else one sum
    ("transpose", "ij->ji", [(3, 4)], 0, 0),  # a permute
    ("transpose_implicit", "ji", [(3, 4)], 0, 0),  # output "ij": a permute
    ("identity", "ij", [(3, 4)], 0, 0),  # 0
    ("sum_all", "ij->", [(3, 4)], 11, 0),  # 12 - 1 = 11
    ("sum_rows", "ij->i", [(3, 4)], 9, 0),  # 3 outputs * (4 - 1) = 9
    ("sum_cols", "ij->j", [(3, 4)], 8, 0),  # 4 outputs * (3 - 1) = 8
    ("trace", "ii->", [(3, 3)], 2, 0),  # diagonal (a view) of 3, then 3 - 1 = 2
    ("trace_implicit", "ii", [(3, 3)], 2, 0),  # "i" appears twice: not in the output; 2
    ("diagonal", "ii->i", [(3, 3)], 0, 0),  # a view
    ("diagonal_sum_other", "iij->j", [(3, 3, 4)], 8, 0),  # diagonal (3, 4); 4 outputs * (3 - 1) = 8
    # ellipsis
    ("ellipsis_matmul", "...ij,...jk->...ik", [(5, 2, 3), (3, 4)],
     200, 120),  # 5*2*4 = 40 outputs * (2*3 - 1) = 200; MACs 40*3 = 120
    ("ellipsis_broadcast", "...ij,...jk->...ik", [(2, 1, 2, 3), (3, 3, 4)],
     240, 144),  # "..." = (2, 3): 2*3*2*4 = 48 outputs * 5 = 240; MACs 48*3 = 144
    ("ellipsis_transpose", "...ij->...ji", [(2, 3, 4)], 0, 0),  # a permute
    ("ellipsis_trace", "...ii->...", [(4, 3, 3)], 8, 0),  # diagonal (4, 3); 4 * (3 - 1) = 8
    ("ellipsis_summed", "...i->i", [(2, 3)], 3, 0),  # "..." not in the output: 3 * (2 - 1) = 3
    ("ellipsis_implicit", "...ij,...jk", [(5, 2, 3), (3, 4)], 200, 120),  # output "...ik": 200
    # three or more operands, left to right
    ("chain3", "ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)],
     110, 64),  # (ij,jk): 8 * (2*3 - 1) = 40, MACs 24; (ik,kl): 10 * (2*4 - 1) = 70, MACs 40
    ("chain4", "ab,bc,cd,de->ae", [(2, 3), (3, 4), (4, 5), (5, 2)],
     146, 84),  # 8 * 5 = 40 (24); 10 * 7 = 70 (40); 4 * 9 = 36 (20): 146; MACs 84
    ("bilinear", "bn,anm,bm->ba", [(2, 5), (3, 5, 4), (2, 4)],
     258, 144),  # (bn,anm): n contracted, m kept for bm: 2*3*4 = 24 * (2*5 - 1) = 216, MACs 120;
    #             (bam,bm): m contracted, b batched: 2*3 = 6 * (2*4 - 1) = 42, MACs 24
    ("shared_label_later", "ij,jk,il->kl", [(2, 3), (3, 4), (2, 5)],
     100, 64),  # (ij,jk): j contracted, i kept for il: 2*4 = 8 * (2*3 - 1) = 40, MACs 24;
    #            (ik,il): i contracted: 4*5 = 20 * (2*2 - 1) = 60, MACs 40
    ("hadamard3_sum", "ij,ij,ij->i", [(2, 3), (2, 3), (2, 3)],
     16, 6),  # j still in the third: mul 6; then 2 outputs * (2*3 - 1) = 10, MACs 6
    ("triple_dot", "i,i,i->", [(4,), (4,), (4,)], 11, 4),  # mul 4; then 1 * (2*4 - 1) = 7, MACs 4
    ("outer4", "a,b,c,d->abcd", [(2,), (3,), (4,), (5,)],
     150, 0),  # muls of 2*3 = 6, 6*4 = 24, 24*5 = 120: 150
    # empty
    ("empty_rows", "ij,jk->ik", [(0, 3), (3, 4)], 0, 0),  # 0 outputs
    ("empty_contraction", "ij,jk->ik", [(2, 0), (0, 4)], 0, 0),  # k = 0: nothing is multiplied
]


@pytest.mark.parametrize(
    "case_id, equation, shapes, flops, macs", [pytest.param(*case, id=case[0]) for case in HAND_CASES]
)
def test_hand_cases(left_to_right, case_id: str, equation: str, shapes: list, flops: int, macs: int) -> None:
    expected = Cost(flops, macs)
    assert einsum_cost(equation, shapes) == expected, "shape-only"
    inputs = tensors(shapes)
    assert aten_cost(equation, inputs) == expected, "aten-level count of what einsum dispatches"
    assert fx_cost(Einsum(equation, len(shapes)), inputs) == expected, "FX-level rule"


def test_docstring_example() -> None:
    assert doctest.testmod(einsum_rules).failed == 0


# -- call forms --------------------------------------------------------------------------------------
def test_call_forms_cost_the_same() -> None:
    a, b, c = tensors([(2, 3), (3, 4), (4, 5)])
    expected = Cost(40, 24)  # 2*4 = 8 outputs * (2*3 - 1); MACs 8*3
    assert fx_cost(Einsum("ij,jk->ik", 2), (a, b)) == expected
    assert fx_cost(Einsum("ij,jk->ik", 2, "list"), (a, b)) == expected
    assert fx_cost(Einsum([[8, 9], [9, 10], [8, 10]], 2, "sublist"), (a, b)) == expected  # I J, J K -> I K
    assert fx_cost(Einsum([[34, 35], [35, 36]], 2, "sublist"), (a, b)) == expected  # implicit: ij,jk
    with torch.backends.opt_einsum.flags(enabled=False):
        chain = Cost(110, 64)  # as "chain3"
        assert fx_cost(Einsum("ij,jk,kl->il", 3, "list"), (a, b, c)) == chain
        assert fx_cost(Einsum([[0, 1], [1, 2], [2, 3], [0, 3]], 3, "sublist"), (a, b, c)) == chain


def test_registered_for_every_name() -> None:
    for fn in (torch.einsum, torch.functional.einsum):
        assert DEFAULT_REGISTRY.function_rule(fn).fn is einsum_rules.einsum
    assert DEFAULT_REGISTRY.aten_rule(torch.ops.aten.einsum.default).fn is einsum_rules.einsum_aten


def test_aten_einsum_rule_and_explicit_path() -> None:
    """The aten entry (for modes that keep ``aten.einsum`` whole) reads ``path``; a path changes the
    pairing, and the rule follows what ATen does with it."""
    shapes = [(2, 3), (3, 4), (4, 5)]
    inputs = tensors(shapes)
    rule = DEFAULT_REGISTRY.aten_rule(torch.ops.aten.einsum.default).fn
    output = torch.einsum("ij,jk,kl->il", *inputs)
    # no path: left to right, as "chain3": 110 / 64
    assert rule(OpCall(("ij,jk,kl->il", inputs), {}, output)) == Cost(110, 64)
    # path [1, 2, 0, 1]: (jk,kl) first: 3*5 = 15 outputs * (2*4 - 1) = 105, MACs 60;
    # then (ij,jl): 2*5 = 10 * (2*3 - 1) = 50, MACs 30: 155 / 90
    path = [1, 2, 0, 1]
    assert rule(OpCall(("ij,jk,kl->il", inputs), {"path": path}, output)) == Cost(155, 90)
    assert einsum_cost("ij,jk,kl->il", shapes, path) == Cost(155, 90)
    _, tally = torch_flops.count_aten(torch.ops.aten.einsum.default, "ij,jk,kl->il", inputs, path=path)
    assert tally.cost == Cost(155, 90)


def test_path_follows_opt_einsum_setting() -> None:
    inputs = tensors([(2, 3), (3, 4), (4, 5)])
    with torch.backends.opt_einsum.flags(enabled=False):
        assert einsum_rules.torch_path("ij,jk,kl->il", inputs) is None
    assert einsum_rules.torch_path("ij,jk->ik", inputs[:2]) is None  # two operands: never a path


@pytest.mark.parametrize(
    "equation, shapes, message",
    [
        ("ij,jk->ik", [(2, 3)], "operand terms"),
        ("ij->ik", [(2, 3)], "output label"),
        ("ij->ii", [(2, 3)], "output label"),
        ("ij", [(2, 3, 4)], "does not match"),
        ("ii", [(2, 3)], "repeated label"),
        ("ij,jk", [(2, 3), (4, 5)], "has sizes"),
        ("i1", [(2, 3)], "invalid subscript"),
        ("..i", [(2, 3)], "ellipsis"),
    ],
)
def test_bad_equations_raise(equation: str, shapes: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        einsum_cost(equation, shapes)


# -- agreement: the FX-level rule equals the aten-level count ----------------------------------------
# with the machine's opt_einsum setting: when opt_einsum is installed, torch and the rule both take its path
AGREEMENT_CASES = [
    ("ij,jk->ik", [(4, 5), (5, 6)]),
    ("bij,bjk->bik", [(3, 4, 5), (3, 5, 2)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),  # attention scores
    ("bhqk,bhkd->bhqd", [(2, 3, 4, 6), (2, 3, 6, 5)]),  # attention values
    ("i,i->", [(7,), (7,)]),
    ("i,j->ij", [(4,), (5,)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),
    ("ij,ij->i", [(3, 4), (3, 4)]),
    ("ij,ji->", [(3, 4), (4, 3)]),
    ("ij,jk", [(3, 1), (1, 5)]),
    ("ij,jk->ik", [(3, 1), (4, 5)]),
    ("ijk,ikl->ijl", [(1, 3, 4), (5, 4, 2)]),
    ("ij,kl->ijkl", [(2, 3), (4, 5)]),
    ("ij,kl", [(2, 3), (4, 5)]),
    ("ij,kl->ik", [(2, 3), (4, 5)]),
    ("iij,jk->ik", [(3, 3, 4), (4, 2)]),
    ("ii,ij->j", [(3, 3), (3, 4)]),
    ("ijji->", [(2, 3, 3, 2)]),
    ("ii", [(4, 4)]),
    ("ijk->kji", [(2, 3, 4)]),
    ("ijk->k", [(2, 3, 4)]),
    ("...ij->...i", [(2, 3, 4, 5)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 6)]),
    ("b...,b...->b", [(3, 2, 4), (3, 2, 4)]),
    ("...,...->...", [(2, 3), (3,)]),
    ("i...->...", [(4, 2, 3)]),
    ("Ab,bC->AC", [(2, 3), (3, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("ab,bc,cd,de->ae", [(20, 3), (3, 40), (40, 5), (5, 20)]),
    ("bn,anm,bm->ba", [(2, 5), (3, 5, 4), (2, 4)]),
    ("ijk,jl,kl,im->m", [(2, 3, 4), (3, 5), (4, 5), (2, 6)]),
    ("i,i,i,i->i", [(3,), (3,), (1,), (3,)]),
]


@pytest.mark.parametrize("equation, shapes", [pytest.param(*case, id=case[0]) for case in AGREEMENT_CASES])
def test_rule_agrees_with_aten_count(equation: str, shapes: list) -> None:
    inputs = tensors(shapes)
    expected = aten_cost(equation, inputs)
    assert fx_cost(Einsum(equation, len(shapes)), inputs) == expected
    if len(shapes) <= 2 or not torch.backends.opt_einsum.enabled:
        assert einsum_cost(equation, shapes) == expected


@st.composite
def equations(draw: Any) -> tuple[str, list[tuple[int, ...]]]:
    """A random valid equation and operand shapes: 1-4 operands over labels ``a-e`` (sizes 1-3,
    repeats for diagonals, size 1 in some operands for broadcasting), an optional ``...`` of up to two
    dimensions (right-aligned, some 1), implicit or explicit output (``...`` kept or summed)."""
    label_size = {label: draw(st.integers(1, 3)) for label in "abcde"}
    ell_sizes = draw(st.lists(st.integers(1, 3), max_size=2))
    terms, shapes = [], []
    for _ in range(draw(st.integers(1, 4))):
        labels = draw(st.lists(st.sampled_from("abcde"), max_size=3))
        broadcast = draw(st.sets(st.sampled_from("abcde")))
        shape = [1 if label in broadcast else label_size[label] for label in labels]
        term = "".join(labels)
        if draw(st.booleans()):
            ell = ell_sizes[len(ell_sizes) - draw(st.integers(0, len(ell_sizes))) :]
            ell = [1 if draw(st.booleans()) and size > 1 else size for size in ell]
            at = draw(st.integers(0, len(labels)))
            term, shape = term[:at] + "..." + term[at:], shape[:at] + ell + shape[at:]
        terms.append(term)
        shapes.append(tuple(shape))
    equation = ",".join(terms)
    if draw(st.booleans()):
        used = sorted({label for term in terms for label in term if label != "."})
        output = draw(st.permutations(used))[: draw(st.integers(0, len(used)))]
        ellipsis = "..." if any("..." in term for term in terms) and draw(st.booleans()) else ""
        equation += "->" + ellipsis + "".join(output)
    return equation, shapes


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(equations())
def test_random_equations_agree(case: tuple[str, list[tuple[int, ...]]]) -> None:
    equation, shapes = case
    inputs = tensors(shapes)
    try:
        torch.einsum(equation, *inputs)
    except RuntimeError:  # e.g. an ellipsis that broadcasts 2 against 3
        assume(False)
    with torch.backends.opt_einsum.flags(enabled=False):
        expected = aten_cost(equation, inputs)
        assert einsum_cost(equation, shapes) == expected, equation
        assert fx_cost(Einsum(equation, len(shapes)), inputs) == expected, equation
