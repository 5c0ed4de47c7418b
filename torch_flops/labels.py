"""Readable names of the callables that ops call: ``operator.add``, ``torch.matmul``,
``torch.nn.functional.linear``, without addresses or the C modules PyTorch binds them in."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MODULE_ALIASES = {
    "_operator": "operator",
    "torch._C._nn": "torch.nn.functional",
    "torch._C._VariableFunctions": "torch",
    "torch._C._linalg": "torch.linalg",
    "torch._C._special": "torch.special",
    "builtins": "",
}


def function_label(fn: Callable[..., Any]) -> str:
    """A readable, address-free name: ``operator.add``, ``torch.matmul``, ``torch.nn.functional.linear``."""
    name = getattr(fn, "__name__", None)
    module = getattr(fn, "__module__", None)
    if name is None or module is None:
        return _ADDRESS.sub("", repr(fn))
    module = _MODULE_ALIASES.get(module, module)
    if module in ("torch.linalg", "torch.special"):  # C bindings are named linalg_inv, special_erfcx
        name = name.removeprefix(module.rsplit(".", 1)[1] + "_")
    return f"{module}.{name}" if module else name
