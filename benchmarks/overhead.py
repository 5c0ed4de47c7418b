"""Overhead of counting: every tool's time as a multiple of a plain forward, measured in one run.

    python benchmarks/overhead.py                  # all models (several minutes on 2 cores)
    python benchmarks/overhead.py --models mlp     # the "many cheap ops" MLP only

Models: torchvision resnet50 and timm ViT-B/16 at batch 1; an MLP of N blocks of Linear(32, 32) + GELU +
residual add (batch 1), where per-node overhead dominates; the 70B-dimension decoder of
examples/llm_meta.py, shape-only. Tools: a plain ``model(x)`` under ``no_grad``; ``TorchFLOPsByFX``
construction (trace) and ``propagate`` separately, FLOPs only (``timing=False``) and with per-node
timing; a bare ``torch.fx.Interpreter``; ``torch.utils.flop_counter.FlopCounterMode``; thop, ptflops and
fvcore when installed. Times are medians of ``--repeat`` runs (construction: one run). One thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.fx as fx
from tabulate import tabulate
from torch import nn

from torch_flops import TorchFLOPsByFX


class MLP(nn.Module):
    """``blocks`` x (Linear(32, 32) -> GELU -> + residual): 3 FX op nodes per block."""

    def __init__(self, blocks: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(32, 32) for _ in range(blocks))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + self.act(layer(x))
        return x


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def once_ms(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000.0, result


def peers(model: nn.Module, x: torch.Tensor, repeat: int) -> dict[str, float | str]:
    from torch.utils.flop_counter import FlopCounterMode

    results: dict[str, float | str] = {}

    def flop_counter() -> None:
        with torch.no_grad(), FlopCounterMode(display=False):
            model(x)

    results["FlopCounterMode"] = median_ms(flop_counter, repeat)
    try:
        import thop

        def run_thop() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                thop.profile(model, inputs=(x,), verbose=False)
            for m in model.modules():  # thop leaves buffers and hooks behind
                for name in ("total_ops", "total_params"):
                    m._buffers.pop(name, None)
                m._forward_hooks.clear()

        results["thop"] = median_ms(run_thop, repeat)
    except ImportError:
        results["thop"] = "not installed"
    try:
        from ptflops import get_model_complexity_info

        shape = tuple(x.shape[1:])
        results["ptflops (aten)"] = median_ms(
            lambda: get_model_complexity_info(model, shape, backend="aten", print_per_layer_stat=False, as_strings=False, verbose=False),
            repeat,
        )
    except ImportError:
        results["ptflops (aten)"] = "not installed"
    try:
        from fvcore.nn import FlopCountAnalysis

        def run_fvcore() -> None:
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.total()

        results["fvcore"] = median_ms(run_fvcore, repeat)
    except ImportError:
        results["fvcore"] = "not installed"
    return results


def measure(name: str, model: nn.Module, x: torch.Tensor, repeat: int, with_peers: bool) -> list[list[object]]:
    model.eval()
    with torch.no_grad():
        plain = median_ms(lambda: model(x), repeat)
    construct_ms, counter = once_ms(lambda: TorchFLOPsByFX(model))
    nodes = len(counter.graph_model.graph.nodes)
    flops_only = median_ms(lambda: counter.propagate(x, timing=False), repeat)
    timed = median_ms(lambda: counter.propagate(x), repeat)
    gm = counter.graph_model

    def bare_interpreter() -> None:
        with torch.no_grad():
            fx.Interpreter(gm).run(x)

    bare = median_ms(bare_interpreter, repeat)
    def one_shot(timing: bool) -> None:  # what a user does once: a new counter and one propagate
        TorchFLOPsByFX(model).propagate(x, timing=timing)

    one_shot_flops = median_ms(lambda: one_shot(False), max(1, repeat // 2))
    one_shot_timed = median_ms(lambda: one_shot(True), max(1, repeat // 2))
    rows = [
        [name, "plain model(x)", plain, 1.0, ""],
        [name, f"TorchFLOPsByFX construction ({nodes:,} nodes)", construct_ms, construct_ms / plain, ""],
        [name, "propagate, FLOPs only (repeated)", flops_only, flops_only / plain, f"{(flops_only - plain) * 1000 / nodes:.2f}"],
        [name, "propagate, with per-node timing (repeated)", timed, timed / plain, f"{(timed - plain) * 1000 / nodes:.2f}"],
        [name, "new counter + first propagate, FLOPs only", one_shot_flops, one_shot_flops / plain, ""],
        [name, "new counter + first propagate, with timing", one_shot_timed, one_shot_timed / plain, ""],
        [name, "bare torch.fx.Interpreter", bare, bare / plain, f"{(bare - plain) * 1000 / nodes:.2f}"],
    ]
    if with_peers:
        for tool, value in peers(model, x, repeat).items():
            if isinstance(value, str):
                rows.append([name, tool, value, "", ""])
            else:
                rows.append([name, tool, value, value / plain, f"{(value - plain) * 1000 / nodes:.2f}"])
    return rows


def faithful_timing(repeat: int) -> str:
    import torchvision

    model, x = torchvision.models.resnet50().eval(), torch.randn(1, 3, 224, 224)
    counter = TorchFLOPsByFX(model)
    counter.propagate(x, warmup=2, repeat=repeat)
    total = counter.print_total_time(show=False)
    plain = counter.plain_forward_ms
    return (f"resnet50, repeat={repeat}: sum of per-node medians {total:.1f} ms, plain forward median "
            f"{plain:.1f} ms: {100.0 * (total - plain) / plain:+.1f}%")


def scaling(blocks: list[int], repeat: int) -> list[list[object]]:
    rows = []
    for n in blocks:
        model, x = MLP(n).eval(), torch.randn(1, 32)
        with torch.no_grad():
            plain = median_ms(lambda: model(x), repeat)
        construct_ms, counter = once_ms(lambda: TorchFLOPsByFX(model))
        nodes = len(counter.graph_model.graph.nodes)
        flops_only = median_ms(lambda: counter.propagate(x, timing=False), repeat)
        rows.append([n, nodes, plain, construct_ms, flops_only, 1000 * construct_ms / nodes, 1000 * flops_only / nodes])
    return rows


def meta_decoder() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import llm_meta

    start = time.perf_counter()
    model, _, kind = llm_meta.build(llm_meta.Dims())
    built = time.perf_counter() - start
    counter = TorchFLOPsByFX(model)
    counted = time.perf_counter() - start - built
    counter.propagate(input_ids=torch.zeros(1, 2048, dtype=torch.long, device="meta"))
    total = time.perf_counter() - start
    return (f"70B-dimension decoder ({kind}), shape-only: build {built:.1f} s, construction {counted:.1f} s, "
            f"propagate {total - built - counted:.1f} s; {counter.total_flops:,} FLOPs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,resnet50,vit,scaling,timing,decoder")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    chosen = set(args.models.split(","))
    rows: list[list[object]] = []
    if "mlp" in chosen:
        rows += measure(f"MLP x{args.blocks}", MLP(args.blocks), torch.randn(1, 32), args.repeat, with_peers=True)
    if "resnet50" in chosen:
        import torchvision

        rows += measure("resnet50", torchvision.models.resnet50(), torch.randn(1, 3, 224, 224), args.repeat, True)
    if "vit" in chosen:
        import timm

        rows += measure("vit_base_patch16_224", timm.create_model("vit_base_patch16_224"), torch.randn(1, 3, 224, 224), args.repeat, True)
    headers = ["model", "what", "ms", "x plain", "µs / node over plain"]
    shown = [[m, w, f"{t:,.1f}" if isinstance(t, float) else t, f"{r:.2f}" if isinstance(r, float) else r, o] for m, w, t, r, o in rows]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {args.repeat} runs\n")
    if rows:
        print(tabulate(shown, headers, tablefmt="github", disable_numparse=True))
    if "scaling" in chosen:
        table = scaling([500, 2000, 8000], args.repeat)
        print("\nScaling (MLP):")
        print(tabulate([[b, n, f"{p:.1f}", f"{c:.1f}", f"{f:.1f}", f"{cn:.1f}", f"{fn:.2f}"] for b, n, p, c, f, cn, fn in table],
                       ["blocks", "nodes", "plain ms", "construction ms", "propagate (FLOPs) ms", "construction µs/node", "propagate µs/node"],
                       tablefmt="github", disable_numparse=True))
        print(f"propagate µs/node at 8,000 blocks / at 500 blocks: {table[-1][6] / table[0][6]:.2f}")
    if "timing" in chosen:
        print("\n" + faithful_timing(10))
    if "decoder" in chosen:
        print("\n" + meta_decoder())


if __name__ == "__main__":
    main()
