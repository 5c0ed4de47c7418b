"""The rows of the layer-wise view from one run's records: a module per row, its own cost and its
parameters. Shared by :func:`torch_flops.profile` and ``TorchFLOPsByFX.report("layers")``."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from torch_flops import aggregate
from torch_flops.records import LayerRecord, NodeRecord
from torch_flops.render import UNITS, LayerTotal, check_choice


def params_by_owner(model: nn.Module) -> dict[str, int]:
    """Learnable parameter count by the qualified name of the module that owns it; a parameter shared
    by several modules is counted once, at its first name."""
    owners: dict[str, int] = {}
    for name, parameter in model.named_parameters():  # deduplicates shared / tied parameters
        owner = name.rpartition(".")[0]
        owners[owner] = owners.get(owner, 0) + parameter.numel()
    return owners


def layer_rows(
    model: nn.Module, records: list[NodeRecord], custom_macs: Mapping[str, int] | None = None, unit: str = "macs"
) -> tuple[list[LayerRecord], LayerTotal]:
    """The rows of the layer-wise view and its total, from one run's records.

    A module gets a row when it was called, is a leaf, owns parameters, ran ops no rule knows, or its
    own ``forward`` ran ops that cost something in ``unit`` ("macs" or "flops"), forward or backward: a
    residual block's ``x + identity`` costs FLOPs but no MACs, so its row shows in the FLOPs view only.
    Every row left out costs nothing in ``unit`` and owns no parameters, so the rows sum to the total in
    ``unit``, backward and recomputation included."""
    check_choice("unit", unit, UNITS)
    called = {r.module_path for r in records if r.op == "call_module" or r.leaf_node}
    every_layer = aggregate.by_layer(records, type(model).__name__, params_by_owner(model), custom_macs)
    layers = [
        layer
        for layer in every_layer
        if (layer.flops + layer.backward_flops + layer.recompute_flops if unit == "flops"
            else layer.macs + layer.backward_macs + layer.recompute_macs)
        or layer.params or layer.unsupported or layer.path in called or _is_leaf(model, layer.path)
    ]
    model_input = next((r.output_shapes[0] for r in records if r.op == "placeholder" and r.output_shapes), None)
    model_output = next((r.input_shapes[0] for r in records if r.op == "output" and r.input_shapes), None)
    total = LayerTotal(
        module_class=type(model).__name__,
        input_shape=model_input,
        output_shape=model_output,
        macs=sum(layer.macs for layer in every_layer),
        flops=sum(layer.flops for layer in every_layer),
        params=sum(layer.params for layer in every_layer),
        backward_flops=sum(layer.backward_flops for layer in every_layer),
        backward_macs=sum(layer.backward_macs for layer in every_layer),
        recompute_flops=sum(layer.recompute_flops for layer in every_layer),
        recompute_macs=sum(layer.recompute_macs for layer in every_layer),
    )
    return layers, total


def _is_leaf(model: nn.Module, path: str) -> bool:
    """A module without children (a container that only routes data gets no row of its own)."""
    module = _submodule(model, path)
    return path != "" and module is not None and next(module.children(), None) is None


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None
