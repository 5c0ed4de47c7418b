"""Coverage report: how every node of real models gets priced.

Profiles every torchvision classification model and one model per timm architecture family (timm's
models grouped by the module that defines them; the smallest-looking name of each family, built with
``pretrained=False`` at the family's default input size), and prints per model: FX nodes, nodes priced
by a rule / the aten fallback / known zero, unsupported nodes (with the aten ops that lack a rule),
total FLOPs, and the error if the model failed; then the totals.

    python benchmarks/coverage.py                     # everything (about 15 minutes on 2 cores)
    python benchmarks/coverage.py --source timm --only resnet,vit
    python benchmarks/coverage.py --output benchmarks/results/coverage.md

Nothing is downloaded: models are built with random weights.
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import warnings

from tabulate import tabulate

from torch_flops import Status, TorchFLOPsByFX, aggregate

# the smaller a model's name sounds, the earlier it is picked to represent its family
_SIZE_WORDS = (
    "atto", "femto", "pico", "nano", "tiny", "xxxs", "xxs", "xs", "micro", "mini", "small", "lite", "s",
    "t", "b0", "a0", "18", "10", "26", "34", "050", "075", "100", "50", "base", "b", "m", "medium",
)
_BIG_RESOLUTION = re.compile(r"(384|448|512|518|560|576|640|800|1024)")


@dataclass
class ModelReport:
    source: str
    name: str
    family: str
    input_shape: tuple[int, ...]
    nodes: int = 0
    by_status: Counter[Status] = field(default_factory=Counter)
    unsupported: list[str] = field(default_factory=list)
    flops: int | None = None
    leaves: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""
    eager_error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.eager_error


def size_rank(name: str) -> tuple[int, int, int, str]:
    tokens = re.split(r"[_\-.]", name)
    rank = min((_SIZE_WORDS.index(t) for t in tokens if t in _SIZE_WORDS), default=len(_SIZE_WORDS))
    return (bool(_BIG_RESOLUTION.search(name)), rank, len(name), name)


def timm_cases(only: set[str] | None) -> Iterator[tuple[str, str, Callable[[], torch.nn.Module]]]:
    import timm

    for family in timm.list_modules():
        if only and family not in only:
            continue
        names = timm.list_models(module=family)
        if not names:
            continue
        name = min(names, key=size_rank)
        yield family, name, lambda name=name: timm.create_model(name, pretrained=False)


def torchvision_cases(only: set[str] | None) -> Iterator[tuple[str, str, Callable[[], torch.nn.Module]]]:
    import torchvision

    for name in torchvision.models.list_models(module=torchvision.models):
        if only and name not in only:
            continue
        yield "torchvision", name, lambda name=name: torchvision.models.get_model(name, weights=None)


def input_shape_of(model: torch.nn.Module, name: str) -> tuple[int, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    if name.startswith("inception_v3"):
        size = (3, 299, 299)
    return (1, *size)


def first_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0][:160] if text else type(error).__name__


def profile_one(source: str, family: str, name: str, build: Callable[[], torch.nn.Module]) -> ModelReport:
    start = time.perf_counter()
    try:
        model = build().eval()
    except Exception as error:  # the model zoo's own failure, not ours
        return ModelReport(source, name, family, (), eager_error=f"build: {first_line(error)}")
    shape = input_shape_of(model, name)
    report = ModelReport(source, name, family, shape)
    x = torch.randn(shape)
    try:
        with torch.no_grad():
            model(x)
    except Exception as error:
        report.eager_error = first_line(error)
        return report
    try:
        counter = TorchFLOPsByFX(model)
        counter.propagate(x)
    except Exception as error:
        report.error = first_line(error)
        if "--debug" in sys.argv:
            traceback.print_exc()
        return report
    records = counter.records
    report.nodes = len(records)
    report.by_status = aggregate.by_status(records)
    report.unsupported = [f"{t} x{c}" if c > 1 else t for t, c in aggregate.unsupported_by_target(records).items()]
    report.flops = counter.total_flops
    report.leaves = counter.leaf_modules
    report.seconds = time.perf_counter() - start
    return report


def trace_path(r: ModelReport) -> str:
    if r.eager_error:
        return "eager fails"
    if r.error:
        return "failed"
    if not r.leaves:
        return "traced"
    return "leaf fallback (root)" if "" in r.leaves else f"leaf fallback ({len(r.leaves)})"


def to_row(r: ModelReport) -> list[object]:
    s = r.by_status
    return [
        r.source, r.family, r.name, "x".join(map(str, r.input_shape)), trace_path(r), r.nodes or "",
        s[Status.RULE], s[Status.FALLBACK], s[Status.ZERO], s[Status.UNSUPPORTED] if r.ok else "",
        f"{r.flops:,}" if r.flops is not None else "", f"{r.seconds:.1f}" if r.ok else "",
        "; ".join(r.unsupported) or r.error or (f"eager run fails: {r.eager_error}" if r.eager_error else ""),
    ]


HEADERS = ["source", "family", "model", "input", "traced / leaf fallback / failed", "nodes", "rule", "fallback", "known-zero", "unsupported",
           "FLOPs", "s", "unsupported ops / error"]


def summary(reports: list[ModelReport]) -> list[str]:
    lines = []
    for source in dict.fromkeys(r.source for r in reports):
        group = [r for r in reports if r.source == source]
        eager_fail = [r for r in group if r.eager_error]
        runs = [r for r in group if not r.eager_error]
        failed = [r for r in runs if r.error]
        profiled = [r for r in runs if not r.error]
        clean = [r for r in profiled if not r.by_status[Status.UNSUPPORTED]]
        share = 100.0 * len(clean) / len(profiled) if profiled else 0.0
        traced = [r for r in profiled if not r.leaves]
        lines.append(
            f"{source}: {len(group)} models; {len(eager_fail)} do not run eagerly at their default input; "
            f"{len(profiled)} profiled ({len(traced)} traced, {len(profiled) - len(traced)} with the leaf "
            f"fallback), {len(failed)} failed; {len(clean)}/{len(profiled)} ({share:.1f}%) with 0 unsupported nodes"
        )
        clean_traced = [r for r in traced if not r.by_status[Status.UNSUPPORTED]]
        if traced:
            lines.append(
                f"  traced without leaves: {len(clean_traced)}/{len(traced)} "
                f"({100.0 * len(clean_traced) / len(traced):.1f}%) with 0 unsupported nodes"
            )
        nodes = Counter()
        for r in profiled:
            nodes.update(r.by_status)
        total = sum(nodes.values())
        if total:
            lines.append(
                f"  nodes: {total:,}; rule {nodes[Status.RULE]:,}, fallback {nodes[Status.FALLBACK]:,}, "
                f"known-zero {nodes[Status.ZERO]:,}, unsupported {nodes[Status.UNSUPPORTED]:,}"
            )
        missing = Counter(
            op for r in profiled for op in {op for entry in r.unsupported for op in re.findall(r"\b\w+\.\w+(?=[,\]])", entry)}
        )
        if missing:
            lines.append("  aten ops without a rule: " + ", ".join(f"{op} ({n} models)" for op, n in missing.most_common()))
        for r in failed:
            lines.append(f"  failed: {r.name}: {r.error}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("all", "torchvision", "timm"), default="all")
    parser.add_argument("--only", default="", help="comma-separated timm families or torchvision model names")
    parser.add_argument("--output", help="also write the report as Markdown to this file")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of failures")
    args = parser.parse_args(argv)
    only = set(filter(None, args.only.split(","))) or None
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")

    cases: list[tuple[str, str, str, Callable[[], torch.nn.Module]]] = []
    if args.source in ("all", "torchvision"):
        cases += [("torchvision", *case) for case in torchvision_cases(only)]
    if args.source in ("all", "timm"):
        cases += [("timm", *case) for case in timm_cases(only)]

    reports = []
    for i, (source, family, name, build) in enumerate(cases, 1):
        report = profile_one(source, family, name, build)
        reports.append(report)
        status = "ok" if report.ok else ("eager fails" if report.eager_error else "FAILED")
        extra = f", {report.by_status[Status.UNSUPPORTED]} unsupported" if report.ok else f": {report.error or report.eager_error}"
        print(f"[{i}/{len(cases)}] {source} {name}: {status}{extra}", file=sys.stderr, flush=True)
        gc.collect()

    table = tabulate([to_row(r) for r in reports], HEADERS, tablefmt="github", disable_numparse=True)
    lines = summary(reports)
    print(table)
    print()
    print("\n".join(lines))
    if args.output:
        with open(args.output, "w") as f:
            f.write(f"# Coverage report\n\ntorch {torch.__version__}; `python benchmarks/coverage.py`\n\n")
            f.write("\n".join(f"- {line.strip()}" for line in lines) + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
