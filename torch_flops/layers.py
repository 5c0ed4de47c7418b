"""The rows of the layer-wise view from one run's records: a module per row, its own cost and its
parameters. Shared by :func:`torch_flops.profile` and ``TorchFLOPsByFX.report("layers")``."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from torch_flops import aggregate
from torch_flops.records import LayerRecord, NodeRecord
from torch_flops.render import LayerTotal


def params_by_owner(model: nn.Module) -> dict[str, int]:
    """Learnable parameter count by the qualified name of the module that owns it; a parameter shared
    by several modules is counted once, at its first name."""
    owners: dict[str, int] = {}
    for name, parameter in model.named_parameters():  # deduplicates shared / tied parameters
        owner = name.rpartition(".")[0]
        owners[owner] = owners.get(owner, 0) + parameter.numel()
    return owners


def layer_rows(
    model: nn.Module, records: list[NodeRecord], custom_macs: Mapping[str, int] | None = None
) -> tuple[list[LayerRecord], LayerTotal]:
    """The rows of the layer-wise view and its total, from one run's records."""
    called = {r.module_path for r in records if r.op == "call_module"}
    called |= {c.path for r in records for c in r.module_costs}
    layers = [
        layer
        for layer in aggregate.by_layer(records, type(model).__name__, params_by_owner(model), custom_macs)
        if layer.macs or layer.params or layer.unsupported or layer.path in called or _is_leaf(model, layer.path)
    ]
    model_input = next((r.output_shapes[0] for r in records if r.op == "placeholder" and r.output_shapes), None)
    model_output = next((r.input_shapes[0] for r in records if r.op == "output" and r.input_shapes), None)
    total = LayerTotal(
        module_class=type(model).__name__,
        input_shape=model_input,
        output_shape=model_output,
        macs=sum(layer.macs for layer in layers),
        params=sum(layer.params for layer in layers),
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
