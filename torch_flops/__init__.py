"""torch_flops: exact FLOPs of every node of a PyTorch model, through ``torch.fx``."""

from torch_flops import rules as _rules  # noqa: F401  (registers the built-in cost rules)
from torch_flops.engine import TorchFLOPsByFX
from torch_flops.interpreter import CostRuleError, NodeExecutionError
from torch_flops.profile import LayerInfo, profile
from torch_flops.records import Cost, LayerRecord, NodeRecord, Status
from torch_flops.registry import DEFAULT_REGISTRY, CostRegistry, DuplicateRuleError, OpCall, Rule
from torch_flops.render import Column, clever_format
from torch_flops.tracing import TraceError

__version__ = "0.1.0"

__all__ = [
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
    "clever_format",
    "profile",
]
