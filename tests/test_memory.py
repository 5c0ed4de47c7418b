"""The liveness pass (:func:`torch_flops.memory.liveness`) against values worked out by hand."""

from __future__ import annotations

from torch_flops.measure import SpanPeaks
from torch_flops.memory import Liveness, allocator_bytes, liveness

# Node 0 makes storage 100 (40 B), last used by node 1. Node 1 makes storage 200 (80 B). Node 2 makes a
# new storage that reuses id 100 (16 B): the first one died after node 1. Node 3 writes storage 200 in
# place and is the model's output (last use 4 = the number of nodes: alive to the end).
PRODUCED = [{100: 40}, {200: 80}, {100: 16}, {200: 80}]
LAST_USE = [1, 3, 3, 4]


def test_liveness_by_hand_with_a_reused_storage_id() -> None:
    # live after each node: 40; 40 + 80 - 40 = 80; 80 + 16 = 96; 96 - 16 = 80 (storage 200 stays to the end)
    # while each runs: 0 + 40; 40 + 80; 80 + 16; 96 + 0 (node 3 allocates nothing new)
    # in the allocator's 512-byte blocks every storage is one block: 512 + 512 while node 1 runs
    assert liveness(PRODUCED, LAST_USE, excluded=set()) == Liveness((40, 80, 96, 80), (40, 120, 96, 96), 120, 1, 2 * 512)


def test_excluded_storages_are_not_counted() -> None:
    # without storage 200 (a parameter, say): 40, 0, 16, 0 live; 40, 40, 16, 16 while running
    assert liveness(PRODUCED, LAST_USE, excluded={200}) == Liveness((40, 0, 16, 0), (40, 40, 16, 16), 40, 0, 512)


def test_temporaries_of_a_node_replace_its_outputs_in_the_peak() -> None:
    # node 2 had 50 B allocated at once inside it: 80 + max(16, 50) = 130 while it runs
    # in blocks: 512 + max(512, 50) = 1024 (the temporaries' bytes are not rounded)
    assert liveness(PRODUCED, LAST_USE, excluded=set(), inner_peaks=[0, 0, 50, 0]) == Liveness(
        (40, 80, 96, 80), (40, 120, 130, 96), 130, 2, 2 * 512)


def test_no_nodes() -> None:
    assert liveness([], [], excluded=set()) == Liveness((), (), 0, 0, 0)


def test_allocator_blocks_are_whole_multiples_of_512_bytes() -> None:
    assert [allocator_bytes(n) for n in (0, 1, 512, 513, 4 * 197)] == [0, 512, 512, 2 * 512, 2 * 512]


def test_the_allocator_peak_rounds_each_storage_on_its_own() -> None:
    # two storages of 600 B alive together: 1,200 B exactly, 2 * 1,024 B in blocks (not 1,536 = the sum rounded)
    assert liveness([{1: 600}, {2: 600}], [2, 2], excluded=set()).allocator_peak_bytes == 2 * 1024


def test_span_peaks_follow_nested_spans_through_counter_resets() -> None:
    """A leaf node (outer span) makes two calls (inner spans); the allocator's peak counter is reset as
    each span opens, and each reading raises every span open at the time."""
    peaks = SpanPeaks(allocated=100)  # the run starts with 100 B allocated
    peaks.open(allocated=100, counter_peak=100)  # the leaf
    peaks.open(allocated=100, counter_peak=100)  # its first call
    assert peaks.close(counter_peak=300) == 300  # the call peaked at 300 (a workspace), left 150
    peaks.open(allocated=150, counter_peak=300)  # the second call: the counter still shows 300, then is reset
    assert peaks.close(counter_peak=180) == 180  # its own peak only
    assert peaks.close(counter_peak=200) == 300  # the leaf's peak is its first call's
    assert peaks.peak == 300  # and the run's
