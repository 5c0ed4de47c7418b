"""The liveness pass (:func:`torch_flops.memory.liveness`) against values worked out by hand."""

from __future__ import annotations

from torch_flops.memory import Liveness, liveness

# Node 0 makes storage 100 (40 B), last used by node 1. Node 1 makes storage 200 (80 B). Node 2 makes a
# new storage that reuses id 100 (16 B): the first one died after node 1. Node 3 writes storage 200 in
# place and is the model's output (last use 4 = the number of nodes: alive to the end).
PRODUCED = [{100: 40}, {200: 80}, {100: 16}, {200: 80}]
LAST_USE = [1, 3, 3, 4]


def test_liveness_by_hand_with_a_reused_storage_id() -> None:
    # live after each node: 40; 40 + 80 - 40 = 80; 80 + 16 = 96; 96 - 16 = 80 (storage 200 stays to the end)
    # while each runs: 0 + 40; 40 + 80; 80 + 16; 96 + 0 (node 3 allocates nothing new)
    assert liveness(PRODUCED, LAST_USE, excluded=set()) == Liveness((40, 80, 96, 80), 120, 1)


def test_excluded_storages_are_not_counted() -> None:
    # without storage 200 (a parameter, say): 40, 0, 16, 0 live; 40, 40, 16, 16 while running
    assert liveness(PRODUCED, LAST_USE, excluded={200}) == Liveness((40, 0, 16, 0), 40, 0)


def test_temporaries_of_a_node_replace_its_outputs_in_the_peak() -> None:
    # node 2 had 50 B allocated at once inside it: 80 + max(16, 50) = 130 while it runs
    assert liveness(PRODUCED, LAST_USE, excluded=set(), inner_peaks=[0, 0, 50, 0]) == Liveness((40, 80, 96, 80), 130, 2)


def test_no_nodes() -> None:
    assert liveness([], [], excluded=set()) == Liveness((), 0, 0)
