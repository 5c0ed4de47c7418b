"""What this PyTorch can do, found by trying it on tiny inputs (never by its version number): tests of
a feature newer than the oldest torch the suite runs on (2.4) skip where the feature is missing."""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


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


def _checkpoint_on_meta() -> bool:
    """Whether ``torch.utils.checkpoint`` runs on meta tensors (torch 2.4 looks up a ``torch.meta`` device
    module and raises ``AttributeError``)."""
    x = torch.ones(1, 2, device="meta", requires_grad=True)
    try:
        return all(checkpoint(nn.Linear(2, 2, device="meta"), x, use_reentrant=reentrant) is not None for reentrant in (False, True))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _transformers_major() -> int | None:
    try:
        return int(importlib.metadata.version("transformers").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return None


CHECKPOINT_ON_META = _checkpoint_on_meta()
needs_checkpoint_on_meta = pytest.mark.skipif(
    not CHECKPOINT_ON_META, reason="this torch's activation checkpointing does not run on meta tensors (torch 2.4)")
needs_transformers_5 = pytest.mark.skipif(
    (_transformers_major() or 5) < 5,
    reason="counts derived on transformers 5, whose models FX cannot trace (each is one leaf, counted call by call); "
           "transformers 4 models are traced in part and build their masks otherwise")


def _vmap_under_saved_tensor_hooks() -> None:
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        torch.func.vmap(torch.sin)(torch.ones(2, 2, requires_grad=True))


VMAP_UNDER_SAVED_TENSOR_HOOKS = works(_vmap_under_saved_tensor_hooks)
needs_vmap_under_saved_tensor_hooks = pytest.mark.skipif(
    not VMAP_UNDER_SAVED_TENSOR_HOOKS,
    reason="this torch's torch.func refuses saved-tensor hooks (torch 2.4), which a backward count sets and transformers "
           "4 masks meet through vmap")
