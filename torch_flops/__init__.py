"""torch_flops: exact FLOPs of every node of a PyTorch model, through ``torch.fx``."""

from torch_flops import rules as _rules  # noqa: F401  (registers the built-in cost rules)
from torch_flops.engine import TorchFLOPsByFX
from torch_flops.fallback import AtenCostMode, AtenTally, count_aten
from torch_flops.planning import NodeExecutionError
from torch_flops.profile import LayerInfo, profile
from torch_flops.records import Cost, LayerRecord, NodeRecord, Status
from torch_flops.registry import (
    DEFAULT_REGISTRY,
    CostRegistry,
    CostRuleError,
    DuplicateRuleError,
    OpCall,
    Rule,
    aten_rule,
    function_rule,
    method_rule,
    module_rule,
)
from torch_flops.render import Column, clever_format
from torch_flops.tracing import TraceError

__version__ = "0.1.0"

__all__ = [
    "AtenCostMode",
    "AtenTally",
    "Column",
    "Cost",
    "CostRegistry",
    "CostRuleError",
    "DEFAULT_REGISTRY",
    "DuplicateRuleError",
    "LayerInfo",
    "LayerRecord",
    "NodeExecutionError",
    "NodeRecord",
    "OpCall",
    "Rule",
    "Status",
    "TorchFLOPsByFX",
    "TraceError",
    "__version__",
    "aten_rule",
    "clever_format",
    "count_aten",
    "function_rule",
    "method_rule",
    "module_rule",
    "profile",
]
