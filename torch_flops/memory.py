"""Analytic memory, on any device (meta included): bytes each node moves and a liveness pass.

- ``read_bytes``: the node's tensor inputs, plus, for a module node, the module's parameters and
  buffers (a layer reads its weights); ``written_bytes``: its tensor outputs. Arithmetic intensity is
  ``flops / (read_bytes + written_bytes)``.
- Liveness: activations are storages (views and in-place results share their input's storage and cost
  nothing new). A storage lives from the node that first produces it to the last node that uses any
  value holding it; values the model returns live to the end. Parameters, buffers and graph constants
  are not activations. ``live_bytes`` of a node is what is still alive after it; ``live_peak_bytes``
  what is alive *while* it runs (its inputs not yet freed and its outputs allocated), and the peak is
  the largest of those.
- The CUDA caching allocator hands out blocks of whole multiples of 512 bytes (512 at least), and its
  counters (``torch.cuda.memory_allocated``) count the blocks: :func:`allocator_bytes`. The liveness
  pass also gives the peak with every storage rounded up so, which is what those counters can show.

Inside a node run as one unit by the aten fallback (a leaf module, the whole model), the allocations of
its aten ops are followed as they happen (:class:`torch_flops.fallback.AtenCostMode`), so its
temporaries count toward the peak; a node priced by a rule is seen only through its output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor``'s elements; of a sparse tensor, the bytes of its indices and stored values."""
    if tensor.layout is not torch.strided:
        return sum(tensor_bytes(part) for part in strided_parts(tensor))
    return tensor.numel() * tensor.element_size()


def strided_parts(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The strided tensors that hold a tensor of another layout: a sparse tensor's indices and values
    (none for a layout whose memory cannot be read, such as mkldnn's)."""
    layout = tensor.layout
    if layout is torch.strided:
        return (tensor,)
    if layout is torch.sparse_coo:
        return (tensor._indices(), tensor._values())
    if layout in (torch.sparse_csr, torch.sparse_bsr):
        return (tensor.crow_indices(), tensor.col_indices(), tensor.values())
    if layout in (torch.sparse_csc, torch.sparse_bsc):
        return (tensor.ccol_indices(), tensor.row_indices(), tensor.values())
    return ()


ALLOCATOR_BLOCK = 512  # the CUDA caching allocator's smallest block, and the multiple every block is of


def allocator_bytes(nbytes: int) -> int:
    """The bytes the CUDA caching allocator's counters count for a storage of ``nbytes``:
    ``512 * ceil(nbytes / 512)``, 0 for an empty storage (which allocates nothing)."""
    return -(-nbytes // ALLOCATOR_BLOCK) * ALLOCATOR_BLOCK


def bytes_of(tensors: Iterable[torch.Tensor]) -> int:
    return sum(tensor_bytes(t) for t in tensors)


def storages(tensors: Iterable[torch.Tensor]) -> dict[int, int]:
    """``{storage id: storage bytes}`` of ``tensors``."""
    found: dict[int, int] = {}
    for tensor in tensors:
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):  # a sparse tensor has no storage: its parts have
            found.update(storages(strided_parts(tensor)))
            continue
        found[storage._cdata] = storage.nbytes()
    return found


def storage_ids(tensors: Iterable[torch.Tensor]) -> set[int]:
    """Storage ids of ``tensors`` (uninitialized lazy parameters have none yet)."""
    lazy = torch.nn.parameter.UninitializedTensorMixin
    return set(storages(t for t in tensors if not isinstance(t, lazy)))


@dataclass(frozen=True)
class Liveness:
    """Per node (graph order): the live activation bytes after it (``live_after``) and while it runs
    (``during``); the peak of ``during`` and the node where it occurs; and ``allocator_peak_bytes``, that
    peak with every storage rounded up to the CUDA allocator's blocks (:func:`allocator_bytes`)."""

    live_after: tuple[int, ...]
    during: tuple[int, ...]
    peak_bytes: int
    peak_index: int
    allocator_peak_bytes: int


def liveness(
    produced: Sequence[dict[int, int]], last_use: Sequence[int], excluded: set[int], inner_peaks: Sequence[int] = ()
) -> Liveness:
    """``produced[i]``: storages held by node ``i``'s value; ``last_use[i]``: the index of its last user
    (``len(produced)`` for values the model returns). Storages in ``excluded`` are not counted.
    ``inner_peaks[i]``: the most a node run as one unit had allocated at once (its temporaries), which
    replaces its outputs' bytes in the peak while it runs when larger (not rounded to blocks: the
    fallback follows bytes)."""
    intervals: list[list[int]] = []  # [first node, last node, bytes] of each storage
    alive: dict[int, list[int]] = {}  # storage id -> its latest interval (an id is reused once freed)
    for i, held in enumerate(produced):
        use = last_use[i]
        for raw, nbytes in held.items():
            if raw in excluded:
                continue
            interval = alive.get(raw)
            if interval is None or interval[1] < i:  # a new storage (the earlier one of that id died before i)
                alive[raw] = interval = [i, use, nbytes]
                intervals.append(interval)
            else:
                if use > interval[1]:
                    interval[1] = use
                if nbytes > interval[2]:
                    interval[2] = nbytes
    n = len(produced)
    live_after, during = _sweep(n, intervals, inner_peaks, lambda nbytes: nbytes)
    _, in_blocks = _sweep(n, intervals, inner_peaks, allocator_bytes)
    peak_index = max(range(n), key=during.__getitem__) if n else 0
    return Liveness(tuple(live_after), tuple(during), during[peak_index] if n else 0, peak_index,
                    max(in_blocks, default=0))


def _sweep(
    n: int, intervals: list[list[int]], inner_peaks: Sequence[int], size: Callable[[int], int]
) -> tuple[list[int], list[int]]:
    """Live bytes after and while each of ``n`` nodes runs, each storage counted as ``size(bytes)``:
    ``+size`` at its first node, ``-size`` after its last."""
    starts = [0] * (n + 1)
    ends = [0] * (n + 2)
    for begin, last, nbytes in intervals:
        starts[begin] += size(nbytes)
        ends[min(last, n) + 1] += size(nbytes)
    live_after, during = [], []
    running = 0
    for i in range(n):
        inner = inner_peaks[i] if i < len(inner_peaks) else 0
        during.append(running + max(starts[i], inner))  # inputs still alive, outputs (or temporaries) allocated
        running += starts[i]
        running -= ends[i + 1]
        live_after.append(running)
    return live_after, during
