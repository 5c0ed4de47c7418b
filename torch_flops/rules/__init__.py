"""Cost rules by op family. Importing this package registers every built-in rule.

Each family module holds pure shape-only formulas (``<op>_cost(...)`` on ints, testable without
running anything) and thin adapters that read shapes from an :class:`~torch_flops.registry.OpCall` for
the module, function, method and aten forms of the op. The convention is written once, in
``docs/conventions.md``.
"""

from torch_flops.rules import (  # noqa: F401  (imported for their registrations)
    activation,
    attention,
    backward,
    conv,
    einsum,
    elementwise,
    embedding,
    foreach,
    linalg,
    linear,
    mha,
    norm,
    pool,
    recurrent,
    reduction,
    resample,
    selection,
    shape,
    spectral,
    vision,
)
