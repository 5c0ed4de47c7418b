"""Hand-computed costs of FFTs (``torch_flops/rules/spectral.py``) and of the tensors made from sizes
alone (``torch.hann_window``, ``torch.empty``, ...), which cost nothing.

``N`` points, ``B`` transforms: complex ``B * 5 N log2 N``; real input or output ``B * 2.5 N log2 N``;
a normalised transform adds one multiply per real number of its output (2 per complex element).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from models import Op
from torch_flops import Status, TorchFLOPsByFX, count_aten
from torch_flops.rules.spectral import fft_cost
from torch_flops.tracer import TENSOR_FACTORIES

REAL = torch.randn(2, 16)
COMPLEX = torch.randn(4, 8, dtype=torch.complex64)


def test_fft_cost() -> None:
    assert fft_cost(4, 8, real=False) == 4 * 5 * 8 * 3  # 480
    assert fft_cost(2, 16, real=True) == 2 * 5 * 16 * 4 // 2  # 320
    assert fft_cost(1, 12, real=True) == 108  # 2.5 * 12 * log2(12) = 107.55, rounded
    assert fft_cost(3, 1, real=False) == fft_cost(0, 64, real=False) == 0  # one point, or no transform


# (id, callable, inputs, FLOPs)
CASES = [
    ("fft", lambda x: torch.fft.fft(x), (COMPLEX,), 4 * 5 * 8 * 3),  # 480: the forward transform is not scaled
    ("ifft", lambda x: torch.fft.ifft(x), (COMPLEX,), 4 * 5 * 8 * 3 + 2 * 4 * 8),  # 480 + 64: 1/8 on 32 complex outputs
    ("fft_ortho", lambda x: torch.fft.fft(x, norm="ortho"), (COMPLEX,), 480 + 64),  # 1/sqrt(8)
    ("rfft", lambda x: torch.fft.rfft(x), (REAL,), 2 * 2.5 * 16 * 4),  # 320
    ("rfft_ortho", lambda x: torch.fft.rfft(x, norm="ortho"), (REAL,), 320 + 2 * 2 * 9),  # 9 complex outputs a row
    # the real 16-point output of 9 complex inputs a row: 320, and 1/16 on 32 real outputs
    ("irfft", lambda x: torch.fft.irfft(x), (torch.randn(2, 9, dtype=torch.complex64),), 320 + 32),
    ("fft_of_real", lambda x: torch.fft.fft(x), (REAL,), 320),  # a real transform; the mirrored half by symmetry
    # two dims of 4 and 8: N = 32, B = 3: 3 * 5 * 32 * 5 = 2,400 (the real input is made complex first)
    ("fft2", lambda x: torch.fft.fft2(x), (torch.randn(3, 4, 8),), 3 * 5 * 32 * 5),
    ("rfft2", lambda x: torch.fft.rfft2(x), (torch.randn(3, 4, 8),), 3 * 2.5 * 32 * 5),  # 1,200
    # 12 points, not a power of two: round(2 * 2.5 * 12 * log2(12)) = round(215.1) = 215
    ("rfft_12", lambda x: torch.fft.rfft(x), (torch.randn(2, 12),), 215),
]


def fx_and_aten(fn: Callable[..., Any], inputs: tuple) -> tuple[int, int]:
    counter = TorchFLOPsByFX(Op(fn))
    counter.propagate(*inputs)
    assert not counter.unsupported
    _, tally = count_aten(fn, *inputs)
    assert not tally.unsupported
    return counter.total_flops, tally.cost.flops


@pytest.mark.parametrize("case_id, fn, inputs, flops", CASES, ids=[c[0] for c in CASES])
def test_fft(case_id: str, fn: Callable[..., Any], inputs: tuple, flops: float) -> None:
    assert fx_and_aten(fn, inputs) == (flops, flops)


def test_spectrogram_counts_the_window_product_and_the_transform() -> None:
    """``stft`` of 16,000 samples, 400-point frames every 160 (centred: padded by 200 each side): 101
    frames; the Hann window (made in ``forward``: 0) multiplies each, 101 * 400 = 40,400; the real
    transforms round(101 * 2.5 * 400 * log2(400)) = 873,029; then ``abs`` and the square, 1 each per
    output, 101 * 201 each."""

    class Spectrogram(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            window = torch.hann_window(400, device=x.device)
            return torch.stft(x, 400, hop_length=160, window=window, return_complex=True).abs() ** 2

    counter = TorchFLOPsByFX(Spectrogram())
    counter.propagate(torch.randn(1, 16000))
    assert not counter.unsupported
    transform = round(101 * 2.5 * 400 * math.log2(400))
    assert transform == 873_029
    assert counter.total_flops == 101 * 400 + transform + 2 * 101 * 201
    statuses = {r.target: r.status for r in counter.records}
    assert statuses["torch.hann_window"] is Status.ZERO


def test_fft_backward_is_priced_as_its_transforms() -> None:
    """``rfft(x).abs().sum()`` backward: the gradient of rfft is a complex-to-real transform back to 16
    points (and a few elementwise ops); the gradient of ``x`` comes out without unsupported ops."""
    counter = TorchFLOPsByFX(Op(lambda x: torch.fft.rfft(x).abs()))
    counter.propagate(torch.randn(2, 16, requires_grad=True), backward=True)
    assert not counter.unsupported
    fft_record = next(r for r in counter.records if r.target == "torch._C._fft.fft_rfft")
    assert not fft_record.backward_unsupported_ops
    assert fft_record.backward_flops >= 2 * 2.5 * 16 * 4  # at least one 16-point real transform a row


FACTORY_CALLS: dict[str, tuple] = {
    "arange": (8,), "range": (0, 8), "linspace": (0, 1, 8), "logspace": (0, 1, 8), "zeros": (8,), "ones": (8,),
    "full": ((8,), 2.0), "empty": (8,), "empty_strided": ((8,), (1,)), "eye": (8,), "rand": (8,), "randn": (8,),
    "randint": (0, 5, (8,)), "randperm": (8,), "normal": (0.0, 1.0, (8,)), "tril_indices": (4, 4),
    "triu_indices": (4, 4), "scalar_tensor": (2.0,), "bartlett_window": (8,), "blackman_window": (8,),
    "hamming_window": (8,), "hann_window": (8,), "kaiser_window": (8,),
}


@pytest.mark.filterwarnings("ignore:torch.range is deprecated")
@pytest.mark.parametrize("name", TENSOR_FACTORIES)
def test_tensors_made_from_sizes_alone_cost_nothing_at_both_levels(name: str) -> None:
    """Made in ``forward`` they are graph nodes (``tracer.TENSOR_FACTORIES``), known zero without the
    aten counter; counted at the aten level they are zero too, none unsupported."""
    fn, args = getattr(torch, name), FACTORY_CALLS[name]

    class Makes(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + getattr(torch, name)(*args).sum().to(x.dtype)  # through the torch namespace, as models call it

    counter = TorchFLOPsByFX(Makes())
    counter.propagate(torch.ones(1))
    made = [r for r in counter.records if r.target == f"torch.{name}"]
    assert [(r.status, r.flops) for r in made] == [(Status.ZERO, 0)]
    _, tally = count_aten(fn, *args)
    assert (tally.cost.flops, dict(tally.unsupported)) == (0, {})


def test_fnet_token_mixing_is_priced() -> None:
    """Hugging Face's FNet mixes tokens with ``fftn`` over (sequence, hidden) of a real input, run as a
    complex transform: 2 layers * 5 * 1,024 * log2(1,024) = 2 * 51,200 for 16 tokens of width 64."""
    transformers = pytest.importorskip("transformers")
    if not transformers.is_torch_available():
        pytest.skip(f"transformers {transformers.__version__} does not run on torch {torch.__version__}")
    config = transformers.FNetConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                                     max_position_embeddings=64)
    counter = TorchFLOPsByFX(transformers.FNetModel(config).eval())
    counter.propagate(torch.randint(0, 1000, (1, 16)))
    assert not counter.unsupported
    assert sum(r.flops for r in counter.records if "fft" in r.target) == 2 * 5 * (16 * 64) * 10
