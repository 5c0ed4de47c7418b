"""Checks of the public API's arguments (``TorchFLOPsByFX``, ``propagate``, ``report``, ``by_module``,
``profile``, the command line): each error names the argument, says what it must be and shows what it
got, before any work is done. Every int-typed argument goes through :func:`check_int`, every flag
through :func:`check_bool`, every choice among names through :func:`check_choice`, every tuple of
classes through :func:`check_classes`."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch


def _got(value: Any) -> str:
    """What an argument got, for an error: its repr and type; a tensor by its shape and dtype (its
    values would fill the message)."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({str(value.dtype).removeprefix('torch.')})"
    return f"{value!r} ({type(value).__name__})"


def check_int(name: str, value: Any, minimum: int = 0, optional: bool = False) -> int | None:
    """``value`` as an int ``>= minimum`` (``None`` too when ``optional``); ``TypeError`` for a value that
    is not an int (a bool, a float, a string ``'3'``), ``ValueError`` for one below ``minimum``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {kind}, got {_got(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (``True``/``False``, not a truthy string such as ``'no'``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_got(value)}")
    return value


def check_str(name: str, value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string{' or None' if optional else ''}, got {_got(value)}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; ``ValueError`` naming them otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {_got(value)}")
    return value


def check_classes(name: str, value: Any, base: type) -> tuple[type, ...]:
    """``value`` as a tuple of subclasses of ``base``: a tuple or list of classes. A class on its own
    is refused with the tuple to write instead, as is anything that is not a ``base`` subclass."""
    if isinstance(value, type):
        raise TypeError(f"{name} must be a tuple of {base.__name__} classes, got the class {value.__name__} "
                        f"on its own: write {name}=({value.__name__},)")
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of {base.__name__} classes, got {_got(value)}")
    bad = [item for item in value if not (isinstance(item, type) and issubclass(item, base))]
    if bad:
        raise TypeError(f"{name} must be a tuple of {base.__name__} classes, got {bad!r} among them")
    return tuple(value)

