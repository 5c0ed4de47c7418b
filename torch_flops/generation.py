"""Prefill and decode: the cost of generating text with a KV cache, step by step.

:func:`count_generation` runs a causal language model (a transformers ``...ForCausalLM``, or any model
that takes ``input_ids`` and a cache and returns ``logits`` and the cache) on a prompt of ``P`` tokens
(the **prefill**), then ``N`` greedy **decode** steps of one token each, every step through
:meth:`TorchFLOPsByFX.propagate` (one counter, re-used: each ``propagate`` replaces its records). Each
step is one plain forward, as ``model.generate`` would run it: no warm-up or repeated runs, which would
append to the cache again. The cache the model returns is the one the next step gets, so counting
leaves the model, its cache and the inputs as generating without counting would.

Per step: FLOPs and MACs (the counter's totals), bytes read and written (the records'
``read_bytes`` / ``written_bytes``: every op's tensor inputs, the weights included, and outputs; inside
a Hugging Face model, which runs as one leaf, each torch-level call is a record, so the KV cache that
the cache update and attention read is counted where they read it), and the KV cache's size after the
step. :func:`phase_totals` sums the steps of each
phase; arithmetic intensity is FLOPs per byte moved. The closed form is in docs/conventions.md
("Prefill and decode").
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torch_flops import aggregate
from torch_flops.arguments import check_int
from torch_flops.engine import TorchFLOPsByFX
from torch_flops.memory import tensor_bytes


@dataclass(frozen=True)
class ModuleShare:
    """A module's own work in one step: its self FLOPs, the bytes its own ops read and wrote
    (``moved_bytes``, its weights included) and the bytes of its own weights."""

    path: str
    module_class: str
    flops: int
    moved_bytes: int
    weight_bytes: int

    @property
    def arithmetic_intensity(self) -> float | None:
        return self.flops / self.moved_bytes if self.moved_bytes else None


@dataclass(frozen=True)
class StepCount:
    """One forward of the generation: ``phase`` ``"prefill"`` or ``"decode"``, ``tokens`` new tokens
    (batch x length), ``keys`` the positions each new token may attend to at the last one (the cache's
    length after the step)."""

    phase: str
    tokens: int
    keys: int
    flops: int
    macs: int
    read_bytes: int
    written_bytes: int
    cache_bytes: int
    modules: tuple[ModuleShare, ...]

    @property
    def moved_bytes(self) -> int:
        """Bytes the step's ops read and wrote (the KV cache as attention reads it included)."""
        return self.read_bytes + self.written_bytes


@dataclass(frozen=True)
class PhaseTotal:
    """The steps of one phase, summed."""

    phase: str
    steps: int
    tokens: int
    flops: int
    read_bytes: int
    written_bytes: int
    cache_bytes: int

    @property
    def moved_bytes(self) -> int:
        return self.read_bytes + self.written_bytes

    @property
    def flops_per_token(self) -> float:
        return self.flops / self.tokens if self.tokens else 0.0

    @property
    def bytes_per_token(self) -> float:
        return self.moved_bytes / self.tokens if self.tokens else 0.0

    @property
    def arithmetic_intensity(self) -> float | None:
        """FLOPs per byte moved."""
        return self.flops / self.moved_bytes if self.moved_bytes else None


def cache_argument(model: nn.Module) -> str:
    """The name ``forward`` takes the KV cache by: ``cache`` (transformers 5.2x) or ``past_key_values``."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The cache a model returned (``output.cache`` or, before transformers renamed it, ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def cache_tensors(cache: Any, depth: int = 4) -> list[torch.Tensor]:
    """The tensors a cache object holds (a ``DynamicCache``'s keys and values, per layer), each once."""
    found: dict[int, torch.Tensor] = {}
    stack = [(cache, 0)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, torch.Tensor):
            found.setdefault(id(value), value)
        elif level < depth and isinstance(value, (list, tuple)):
            stack.extend((item, level + 1) for item in value)
        elif level < depth and isinstance(value, dict):
            stack.extend((item, level + 1) for item in value.values())
        elif level < depth and hasattr(value, "__dict__") and not isinstance(value, (nn.Module, type)):
            stack.extend((item, level + 1) for item in vars(value).values())
    return list(found.values())


def count_generation(
    model: nn.Module, input_ids: torch.Tensor, steps: int, counter: TorchFLOPsByFX | None = None, top: int = 5,
) -> tuple[list[StepCount], torch.Tensor]:
    """Count a prefill of ``input_ids`` (``[batch, P]``) and ``steps`` greedy decode steps with the KV
    cache; return one :class:`StepCount` per forward and the generated tokens (``[batch, steps]``).

    ``counter`` (a :class:`TorchFLOPsByFX` of ``model``, e.g. with ``attention="causal"``) is re-used for
    every step; one with default options is made when it is ``None``. ``top`` modules by self FLOPs are
    kept per step."""
    steps = check_int("steps", steps, minimum=0)
    top = check_int("top", top, minimum=1)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
        raise TypeError(f"input_ids must be a [batch, length] tensor of token ids, got {input_ids!r}")
    if input_ids.is_meta:
        raise ValueError("generation needs real tensors (the next token is the argmax of the logits): not meta")
    counter = counter if counter is not None else TorchFLOPsByFX(model)
    if counter.model is not model:
        raise ValueError("counter must count this model")
    weights = _own_weight_bytes(model)
    name = cache_argument(model)
    counts, generated, tokens, cache = [], [], input_ids, None
    for step in range(steps + 1):
        inputs = {"input_ids": tokens, "use_cache": True} | ({name: cache} if cache is not None else {})
        output = counter.propagate(timing=True, warmup=0, repeat=1, **inputs)  # one forward, as generate runs it
        cache = returned_cache(output)
        if cache is None:
            raise ValueError(f"{type(model).__name__} returned no cache: it must return one with use_cache=True")
        counts.append(_step_count("prefill" if step == 0 else "decode", counter, tokens, cache, weights, top))
        if step < steps:
            tokens = output.logits[:, -1:].argmax(-1)
            generated.append(tokens)
    return counts, torch.cat(generated, dim=1) if generated else input_ids[:, :0]


def phase_totals(counts: Iterable[StepCount]) -> list[PhaseTotal]:
    """The steps of each phase summed, prefill first."""
    totals: dict[str, list[StepCount]] = {}
    for count in counts:
        totals.setdefault(count.phase, []).append(count)
    return [
        PhaseTotal(phase, len(group), sum(c.tokens for c in group), sum(c.flops for c in group),
                   sum(c.read_bytes for c in group), sum(c.written_bytes for c in group), sum(c.cache_bytes for c in group))
        for phase, group in totals.items()
    ]


def to_text(counts: list[StepCount]) -> str:
    """Per phase: FLOPs, bytes and intensity in total and per token; then each phase's costliest modules
    (of its last step)."""
    lines = [f"{'phase':<8} {'steps':>5} {'tokens':>6} {'FLOPs':>16} {'FLOPs/token':>14} {'bytes moved':>14} "
             f"{'bytes/token':>13} {'KV cache B':>12} {'FLOP/B':>8}"]
    for total in phase_totals(counts):
        intensity = total.arithmetic_intensity
        lines.append(
            f"{total.phase:<8} {total.steps:>5} {total.tokens:>6} {total.flops:>16,} {total.flops_per_token:>14,.0f} "
            f"{total.moved_bytes:>14,} {total.bytes_per_token:>13,.0f} {total.cache_bytes:>12,} "
            f"{'-' if intensity is None else f'{intensity:.2f}':>8}"
        )
    lines.append("(bytes moved: every op's tensor inputs, weights and KV cache included, and outputs; "
                 "KV cache B: its size after the phase's last step; FLOP/B = FLOPs / bytes moved)")
    for phase in ("prefill", "decode"):
        last = [c for c in counts if c.phase == phase][-1:]
        if not last:
            continue
        step = last[0]
        lines.append(f"\n{phase} (step of {step.tokens} token(s), {step.keys} positions): top modules by own FLOPs")
        lines.append(f"  {'module':<36} {'class':<18} {'FLOPs':>14} {'% of step':>9} {'bytes moved':>12} "
                     f"{'weight B':>12} {'FLOP/B':>8}")
        for share in step.modules:
            intensity = share.arithmetic_intensity
            ratio = "-" if intensity is None else f"{intensity:.2f}"
            percent = 100.0 * share.flops / step.flops if step.flops else 0.0
            lines.append(f"  {share.path or '(root)':<36} {share.module_class:<18} {share.flops:>14,} {percent:>9.2f} "
                         f"{share.moved_bytes:>12,} {share.weight_bytes:>12,} {ratio:>8}")
    return "\n".join(lines)


def _step_count(phase: str, counter: TorchFLOPsByFX, tokens: torch.Tensor, cache: Any, weights: dict[str, int],
                top: int) -> StepCount:
    records = counter.records
    rows = counter.by_module(sort="self_flops", top=top)
    moved: dict[str, int] = {}
    for charge in aggregate.charges(records, ""):
        moved[charge.path] = moved.get(charge.path, 0) + charge.moved_bytes
    cache_bytes = sum(tensor_bytes(t) for t in cache_tensors(cache))
    return StepCount(
        phase=phase, tokens=tokens.numel(), keys=_cache_length(cache, tokens), flops=aggregate.total_flops(records),
        macs=aggregate.total_macs(records),
        read_bytes=sum(r.read_bytes for r in records), written_bytes=sum(r.written_bytes for r in records),
        cache_bytes=cache_bytes,
        modules=tuple(ModuleShare(row.path, row.module_class, row.self_flops, moved.get(row.path, 0), weights.get(row.path, 0))
                      for row in rows),
    )


def _cache_length(cache: Any, tokens: torch.Tensor) -> int:
    length = getattr(cache, "get_seq_length", None)
    return int(length()) if callable(length) else tokens.shape[-1]


def _own_weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of each module's own parameters and buffers (tied weights once, at their first owner)."""
    seen: set[int] = set()
    owned: dict[str, int] = {}
    for path, module in model.named_modules():
        total = 0
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor_bytes(tensor)
        owned[path] = total
    return owned
