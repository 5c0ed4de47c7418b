"""Wrappers around the model a user means to count.

``nn.DataParallel`` and ``nn.parallel.DistributedDataParallel`` hold it in ``.module``;
``torch.compile`` returns an ``OptimizedModule`` that holds it in ``._orig_mod``. A wrapper adds no
arithmetic of its own: its ``forward`` scatters inputs, opens profiler ranges, synchronises buffers or
runs compiled code, none of which FX can trace or the layer views can attribute. torch_flops counts
the wrapped model instead, as many wrappers deep as there are (``DataParallel(torch.compile(m))``).
"""

from __future__ import annotations

import sys

from torch import nn

_MODULE_ATTRIBUTE = {nn.DataParallel: "module", nn.parallel.DistributedDataParallel: "module"}


def _wrapped_attribute(model: nn.Module) -> str | None:
    """The attribute under which ``model`` holds the model it wraps, or ``None`` if it wraps none."""
    for wrapper, attribute in _MODULE_ATTRIBUTE.items():
        if isinstance(model, wrapper):
            return attribute
    # torch.compile's wrapper: only an imported torch._dynamo can have made one (importing it is slow)
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        return "_orig_mod"
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``model``'s wrappers (``model`` itself when it is not a wrapper)."""
    while (attribute := _wrapped_attribute(model)) is not None:
        model = getattr(model, attribute)
    return model
