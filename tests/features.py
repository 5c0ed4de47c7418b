"""What this PyTorch can do, found by trying it on tiny inputs (never by its version number): tests of
a feature newer than the oldest torch the suite runs on (2.4) skip where the feature is missing."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F


def works(attempt: Callable[[], Any]) -> bool:
    """Whether ``attempt()`` runs; the errors torch raises for an unknown argument or mode count as no."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attempt()
    except (TypeError, ValueError, RuntimeError, NotImplementedError):
        return False
    return True


def _jagged_embedding_bag() -> Any:
    rows = torch.nested.nested_tensor([torch.tensor([1, 2]), torch.tensor([3, 4, 5])], layout=torch.jagged)
    return F.embedding_bag(rows, torch.ones(6, 2), mode="sum")


SDPA_GQA = works(lambda: F.scaled_dot_product_attention(*(torch.ones(1, h, 2, 2) for h in (2, 1, 1)), enable_gqa=True))
LANCZOS = works(lambda: F.interpolate(torch.ones(1, 1, 4, 4), scale_factor=0.5, mode="lanczos", antialias=True))
JAGGED_EMBEDDING_BAG = works(_jagged_embedding_bag)

needs_sdpa_gqa = pytest.mark.skipif(not SDPA_GQA, reason="this torch's SDPA has no enable_gqa (torch 2.5 on)")
needs_lanczos = pytest.mark.skipif(not LANCZOS, reason="this torch's F.interpolate has no antialiased 'lanczos' mode")
needs_jagged_embedding_bag = pytest.mark.skipif(
    not JAGGED_EMBEDDING_BAG, reason="this torch's F.embedding_bag does not take a jagged nested tensor")
