"""Every GPU measurement the open issues (19, 20, 21) owe, in one script of a few minutes.

    PYTHONPATH=. python benchmarks/gpu_check.py                       # on CUDA, full sizes (< 5 min on an H200)
    PYTHONPATH=. python benchmarks/gpu_check.py --sections 1,4        # a subset
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpucheck   # dry run on CPU

Results go to ``--out`` (default ``$OUT``, else ``benchmarks/results/gpu_check``): ``gpu_check.md`` (one
table per section) and ``gpu_check.json`` (the same rows, raw), written again after every section so
that a run cut short keeps what it measured. Each section catches its own exceptions (and each row its
own, where rows are independent) and records them.

Sections (run in the order given; by default 0, 2, 3, 4, 5, 1: the quick pre-flight, then the issues'
measurements, the long device sweep last):
 0. Trace pre-flight (issue 19): a five-layer model profiled with one ``torch_flops::<n>`` range per layer,
    as the timed runs do: the trace's categories and launch APIs, how its device activities join their
    launches (``SpanTimes.joins``: by correlation id, by External id, not at all), each range's device time, and
    ``propagate`` on the same model (every op timed, the busy fraction, the note). The trace is kept as
    ``trace_preflight.json``, a real trace for ``tests/traces``.
 1. Same count on every device (issue 20): small transformers configs (GPT-2, BERT, Llama, T5, Whisper),
    eager and sdpa attention, fp32 and bf16: total FLOPs on CPU, on CUDA and shape-only (meta).
 2. Timing truth (issue 19): kernel time of a plain forward (torch.profiler, sum of CUDA kernel
    durations, median), plain forward wall time, sum of per-node device times of ``propagate(x,
    warmup=3, repeat=10)`` (each node's kernels from the profiler's records), their ratio, the GPU's busy
    fraction, the five costliest nodes against their ops replayed alone; FLOPs-only
    ``propagate(timing=False)`` / plain forward (interleaved rounds). resnet50 b1/b64, ViT-B/16 b1/b32
    bf16, GPT-2 (12 layers, 768, batch 4, sequence 1024, bf16).
 3. Memory vs allocator (issue 19): ``activation_memory().peak_activation_bytes`` vs
    ``max_memory_allocated`` of a plain forward above a baseline holding only the model (input included),
    resnet50 b1/b64, ViT-B/16 b1 and b32 bf16, torchvision vit_b_16 b8, convnext_tiny b16; beside it the
    run's own allocator peak per node and what the ops allocated inside themselves (workspaces).
 4. Training memory vs allocator (issue 21): ``training_memory()`` of ``propagate(x, backward=True,
    optimizer=AdamW)`` vs a real forward + backward + AdamW step on a copy of the model; forward and
    backward FLOPs against ``FlopCounterMode``.
 5. Backward FLOPs on CUDA kernels (issue 21): a Llama config with sdpa in fp16/bf16 on CUDA (flash or
    efficient attention) against fp32 on CPU; the attention aten ops that ran.

On CPU the CUDA-only measurements are "skipped: no CUDA" but the code around them still runs (small
sizes with ``--quick``), so the script is tested end to end without a GPU.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from torch_flops import TorchFLOPsByFX

ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MiB = 2**20


# -- helpers ---------------------------------------------------------------------------------------------
def cuda_ok(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def sync(device: torch.device) -> None:
    if cuda_ok(device):
        torch.cuda.synchronize(device)


def pct(ours: float | None, truth: float | None) -> float | None:
    if ours is None or truth is None or truth == 0:
        return None
    return 100.0 * (ours - truth) / truth


def mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / MiB


def cast_inputs(inputs: dict[str, Any], dtype: torch.dtype, device: torch.device | str) -> dict[str, Any]:
    return {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}


def floating_sum(output: Any) -> torch.Tensor:
    """The loss used everywhere here: the sum, in fp32, of the first floating tensor of the output."""
    if isinstance(output, torch.Tensor):
        return output.float().sum()
    for name in ("logits", "last_hidden_state"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value.float().sum()
    values = output.values() if isinstance(output, dict) else output
    for value in values:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.float().sum()
    raise TypeError(f"no floating tensor in {type(output).__name__}")


def timed_ms(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - start) * 1e3


def free(device: torch.device) -> None:
    gc.collect()
    if cuda_ok(device):
        torch.cuda.empty_cache()


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)\n"
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines) + "\n"


class Section:
    """One section's rows, notes and error; rows that fail record their error and the section goes on."""

    def __init__(self, number: int, title: str, out: Path) -> None:
        self.number, self.title, self.out = number, title, out  # out: where a section may write files
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.status = "ok"
        self.error: str | None = None
        self.seconds = 0.0

    def row(self, base: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> None:
        row = dict(base)
        try:
            row.update(fn())
        except Exception as error:  # noqa: BLE001 - recorded, the next row runs
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
            self.notes.append(f"row {base}: {traceback.format_exc(limit=6)}")
        self.rows.append(row)
        print(f"  [{self.number}] " + ", ".join(f"{k}={fmt(v)}" for k, v in row.items()), flush=True)

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "title": self.title, "status": self.status, "error": self.error,
                "seconds": round(self.seconds, 1), "rows": self.rows, "notes": self.notes}


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
        "cuda_available": torch.cuda.is_available(), "TIMM_FUSED_ATTN": os.environ.get("TIMM_FUSED_ATTN"),
    }
    if torch.cuda.is_available():
        env |= {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(), "capability": ".".join(map(str, torch.cuda.get_device_capability()))}
    for name in ("transformers", "torchvision", "timm"):
        try:
            env[name] = __import__(name).__version__
        except Exception as error:  # noqa: BLE001
            env[name] = f"unavailable ({type(error).__name__})"
    try:
        import subprocess
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        env["commit"] = None
    return env


def write(out: Path, env: dict[str, Any], sections: list[Section]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps({"environment": env, "sections": [s.to_json() for s in sections]},
                                                   indent=1, default=str))
    parts = ["# GPU check (`benchmarks/gpu_check.py`)\n",
             "\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n"]
    for s in sections:
        parts.append(f"\n## {s.number}. {s.title}\n\nstatus: {s.status} ({s.seconds:.1f} s)\n")
        if s.error:
            parts.append(f"\n```\n{s.error}\n```\n")
        parts.append("\n" + md_table(s.rows))
        notes = [n for n in s.notes if not n.startswith("row ")]
        if notes:
            parts.append("\n" + "\n".join(f"- {n}" for n in notes) + "\n")
        errors = [n for n in s.notes if n.startswith("row ")]
        if errors:
            parts.append("\n<details><summary>row errors</summary>\n\n```\n" + "\n".join(errors) + "\n```\n</details>\n")
    (out / "gpu_check.md").write_text("".join(parts))


# -- models ----------------------------------------------------------------------------------------------
def transformers_models(attention: str) -> dict[str, tuple[Callable[[], nn.Module], Callable[[], dict[str, torch.Tensor]]]]:
    """Small configs as in tests/test_transformers.py, with ``attn_implementation`` set on every one."""
    import transformers as T

    def tokens(batch: int = 2, length: int = 16) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.randint(0, 1000, (batch, length)),
                "attention_mask": torch.ones(batch, length, dtype=torch.long)}

    a = {"attn_implementation": attention}
    return {
        "gpt2": (lambda: T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64,
                                                        bos_token_id=0, eos_token_id=0, pad_token_id=0, use_cache=False, **a)),
                 tokens),
        "bert": (lambda: T.BertModel(T.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                  intermediate_size=128, vocab_size=1000, **a)), tokens),
        "llama": (lambda: T.LlamaForCausalLM(T.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                           num_key_value_heads=2, intermediate_size=128, vocab_size=1000,
                                                           use_cache=False, **a)), tokens),
        "t5": (lambda: T.T5ForConditionalGeneration(T.T5Config(num_layers=2, num_decoder_layers=2, d_model=64, d_ff=128,
                                                               num_heads=4, d_kv=16, vocab_size=1000, use_cache=False, **a)),
               lambda: {**tokens(), "decoder_input_ids": torch.randint(0, 1000, (2, 8))}),
        "whisper": (lambda: T.WhisperForConditionalGeneration(T.WhisperConfig(
            encoder_layers=2, decoder_layers=2, d_model=64, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=1000, num_mel_bins=80, max_source_positions=1500,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, use_cache=False, **a)),
            lambda: {"input_features": torch.rand(1, 80, 3000), "decoder_input_ids": torch.randint(0, 1000, (1, 8))}),
    }


def vision_model(name: str, quick: bool) -> tuple[nn.Module, int]:
    """(model, image size). ``--quick`` keeps the architecture but shrinks the image (ViT: a tiny ViT)."""
    if name == "resnet50":
        import torchvision
        return torchvision.models.resnet50(weights=None), 64 if quick else 224
    if name == "tv_vit_b_16":  # torchvision's ViT-B/16 (its attention is nn.MultiheadAttention)
        import torchvision
        if quick:
            return torchvision.models.VisionTransformer(64, 16, 2, 2, 64, 128), 64
        return torchvision.models.vit_b_16(weights=None), 224
    import timm
    if name == "vit_base_patch16_224":
        if quick:
            return timm.create_model("vit_tiny_patch16_224", img_size=64, pretrained=False), 64
        return timm.create_model("vit_base_patch16_224", pretrained=False), 224
    if name == "convnext_tiny":
        return timm.create_model("convnext_tiny", pretrained=False), 64 if quick else 224
    raise ValueError(name)


def gpt2_lm(quick: bool, full: tuple[int, int, int, int, int, int] = (4, 256, 4, 256, 8192, 4),
            ) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A GPT-2 LM from a config and its input ids, on CPU: ``full`` is (layers, width, heads, sequence,
    vocabulary, batch); ``--quick`` shrinks it to (2, 64, 4, 32, 1000, 2)."""
    import transformers as T
    layers, width, heads, seq, vocab, batch = (2, 64, 4, 32, 1000, 2) if quick else full
    config = T.GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab, n_positions=seq,
                          bos_token_id=0, eos_token_id=0, pad_token_id=0, use_cache=False, attn_implementation="sdpa")
    return T.GPT2LMHeadModel(config), {"input_ids": torch.randint(0, config.vocab_size, (batch, seq))}


# -- section 0 -------------------------------------------------------------------------------------------
def section_trace(s: Section, device: torch.device, quick: bool) -> None:
    """Does this machine's profiler trace have the shape ``device_time.attribute`` reads? See the docstring."""
    from torch_flops import device_time
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = cuda_ok(device)
    if not cuda:
        s.status = "skipped: no CUDA (the trace holds no device activity); the rest ran on CPU as a dry run"
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 30 * 30, 10))
    model = model.to(device).eval()
    x = torch.randn(8, 3, 32, 32, device=device)
    with torch.no_grad():
        model(x)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof, torch.no_grad():
        h = x
        for number, layer in enumerate(model):
            with record_function(f"{device_time.SPAN_PREFIX}{number}"):
                h = layer(h)
        sync(device)
    s.out.mkdir(parents=True, exist_ok=True)
    path = s.out / "trace_preflight.json"
    prof.export_chrome_trace(str(path))
    document = json.loads(path.read_text())
    events = [e for e in (document["traceEvents"] if isinstance(document, dict) else document) if e.get("ph") == "X"]

    def run_trace() -> dict[str, Any]:
        launches = [e for e in events if e.get("cat") in device_time.LAUNCH_CATEGORIES]
        times = device_time.attribute(events)
        span_threads = {(e.get("pid"), e.get("tid")) for e in events if e.get("cat") == device_time.SPAN_CATEGORY}
        launch_threads = {(e.get("pid"), e.get("tid")) for e in launches}
        return {"categories": dict(Counter(e.get("cat") for e in events)),
                "launch APIs": dict(Counter(e["name"] for e in launches)),
                "device activities by join": dict(times.joins), "unlinked ms": times.unlinked_ms,
                "launch threads = range threads": launch_threads <= span_threads if launch_threads else None,
                "device ms per range": {n: round(ms, 4) for n, ms in sorted(times.device_ms.items())},
                "device ms total": times.device_total_ms, "busy": times.busy_fraction}
    s.row({"check": "trace"}, run_trace)

    def run_propagate() -> dict[str, Any]:
        counter = TorchFLOPsByFX(model)
        counter.propagate(x, warmup=1, repeat=3)
        ops = [r for r in counter.records if r.op == "call_module" and r.target != "3"]  # Flatten launches nothing
        return {"ops timed > 0": f"{sum(1 for r in ops if (r.time_ms or 0) > 0)}/{len(ops)}",
                "node ms": {r.name: r.time_ms for r in ops}, "busy": counter.gpu_busy_fraction,
                "timing note": counter.timing_note}
    s.row({"check": "propagate"}, run_propagate)
    s.notes.append("expected on CUDA: every device activity joined ('launch': by correlation id; 'host op': by "
                   "External id, a launch API the profiler does not record, attributed through the op that launched "
                   "it; 'none': in no node), every range but 3 (Flatten, a view) with device time, every op timed; "
                   "trace_preflight.json holds the trace itself")


# -- section 1 -------------------------------------------------------------------------------------------
def section_same_count(s: Section, device: torch.device, quick: bool) -> None:
    cuda = cuda_ok(device)
    if not cuda:
        s.notes.append("skipped: no CUDA (the CUDA column); CPU and meta still counted")
    for attention in ("eager", "sdpa"):
        for name, (build, make_inputs) in transformers_models(attention).items():
            for dname in ("fp32", "bf16"):
                def run(build=build, make_inputs=make_inputs, dname=dname) -> dict[str, Any]:
                    dtype = DTYPES[dname]
                    torch.manual_seed(0)
                    model = build().eval().to(dtype)
                    inputs = make_inputs()
                    counts: dict[str, Any] = {}
                    counter = TorchFLOPsByFX(model)
                    counter.propagate(**cast_inputs(inputs, dtype, "cpu"), timing=False)
                    counts["cpu"], unsupported = counter.total_flops, len(counter.unsupported)
                    leaves = ", ".join(p or "(whole model)" for p in counter.leaf_modules) or "none"
                    meta_error = None
                    try:  # a model that reads tensor values (.item()) cannot run on meta: recorded, CPU/CUDA still compared
                        counter.propagate_shapes(**cast_inputs(inputs, dtype, "cpu"))
                        counts["meta"] = counter.total_flops
                    except Exception as error:  # noqa: BLE001
                        meta_error = f"{type(error).__name__}: {str(error).splitlines()[0][-160:]}"
                    if cuda:
                        model.to(device)
                        counter.propagate(**cast_inputs(inputs, dtype, device), timing=False)
                        counts["cuda"] = counter.total_flops
                        model.to("cpu")
                    values = [v for v in counts.values()]
                    return {"cpu": counts["cpu"], "cuda": counts.get("cuda"), "meta": counts.get("meta"),
                            "unsupported nodes (cpu)": unsupported, "leaf modules": leaves,
                            "equal": len(set(values)) == 1 if len(values) > 1 else None, "compared": "/".join(counts), "meta error": meta_error}
                s.row({"model": name, "attention": attention, "dtype": dname}, run)
    free(device)


# -- section 2 -------------------------------------------------------------------------------------------
def kernel_time_ms(fn: Callable[[], Any], device: torch.device) -> tuple[float | None, int, float | None]:
    """Sum of the CUDA kernel (and memcpy/memset) durations of one call of ``fn``, by torch.profiler."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    total_us, kernels = 0.0, 0
    for event in prof.events():
        if getattr(event, "device_type", None) == DeviceType.CUDA:
            total_us += event.time_range.elapsed_us()
            kernels += 1
    # cross-check: the device time the profiler attributes to CPU-side ops (self, so nothing twice)
    attributed = 0.0
    for avg in prof.key_averages():
        if getattr(avg, "device_type", DeviceType.CPU) == DeviceType.CPU:
            attributed += getattr(avg, "self_device_time_total", None) or getattr(avg, "self_cuda_time_total", 0) or 0
    return (total_us / 1e3 if kernels else None), kernels, (attributed / 1e3 if attributed else None)


def timing_case(name: str, batch: int, quick: bool, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, tuple, dict]:
    """(model, args, kwargs) of one section-2 case on ``device`` in ``dtype``: a vision model on images,
    or the issue's GPT-2 (12 layers, 768 wide, sequence 1024; smaller with ``--quick``)."""
    if name == "gpt2":
        model, inputs = gpt2_lm(quick, full=(12, 768, 12, 1024, 50257, batch))
        return model.eval().to(device=device, dtype=dtype), (), {k: v.to(device) for k, v in inputs.items()}
    model, size = vision_model(name, quick)
    model = model.eval().to(device=device, dtype=dtype)
    return model, (torch.randn(batch, 3, size, size, device=device, dtype=dtype),), {}


def alone_ms(counter: TorchFLOPsByFX, args: tuple, kwargs: dict, names: list[str], device: torch.device) -> dict[str, float | None]:
    """The kernel time of each named graph node's op run by itself on the inputs it got in the model
    (a call inside a leaf is not a graph node: not replayed)."""
    captured: dict[str, Callable[[], Any]] = {}

    def observe(node, plan, node_args, node_kwargs, result) -> None:  # noqa: ANN001
        if node.name not in names:
            return
        if node.op == "call_module":
            module = counter.graph_model.get_submodule(node.target)
            captured[node.name] = lambda: module(*node_args, **node_kwargs)
        elif node.op == "call_function":
            captured[node.name] = lambda: node.target(*node_args, **node_kwargs)
        elif node.op == "call_method":
            captured[node.name] = lambda: getattr(node_args[0], node.target)(*node_args[1:], **node_kwargs)

    with torch.no_grad():
        counter._propagate(args, kwargs, observer=observe, timing=False)
        out: dict[str, float | None] = {}
        for name in names:
            replay = captured.get(name)
            if replay is None:
                out[name] = None
                continue
            for _ in range(3):
                replay()
            out[name] = statistics.median(kernel_time_ms(replay, device)[0] or 0.0 for _ in range(5))
    return out


def section_timing(s: Section, device: torch.device, quick: bool) -> None:
    cuda = cuda_ok(device)
    if not cuda:
        s.status = "skipped: no CUDA (kernel times); the rest ran on CPU at small sizes as a dry run"
    cases = [("resnet50", 1, "fp32"), ("resnet50", 2 if quick else 64, "fp32"),
             ("vit_base_patch16_224", 1, "fp32"), ("vit_base_patch16_224", 2 if quick else 32, "bf16"),
             ("gpt2", 2 if quick else 4, "bf16")]
    warmup, repeat, profiled, rounds = (1, 3, 2, 3) if quick else (3, 10, 5, 10)
    for name, batch, dname in cases:
        def run(name=name, batch=batch, dname=dname) -> dict[str, Any]:
            model, args, kwargs = timing_case(name, batch, quick, device, DTYPES[dname])

            def plain() -> Any:
                with torch.no_grad():
                    return model(*args, **kwargs)
            for _ in range(3):
                plain()
            kernel = [kernel_time_ms(plain, device) for _ in range(profiled)] if cuda else []
            kernel_ms = statistics.median(k[0] for k in kernel) if kernel and all(k[0] is not None for k in kernel) else None
            kernel_alt = statistics.median(k[2] for k in kernel) if kernel and all(k[2] is not None for k in kernel) else None
            wall_ms = statistics.median(timed_ms(plain, device) for _ in range(repeat))
            counter = TorchFLOPsByFX(model)
            counter.propagate(*args, **kwargs, warmup=warmup, repeat=repeat)
            node_sum = counter.print_total_time(show=False)
            busy, note = counter.gpu_busy_fraction, counter.timing_note  # the next runs reset both
            host_sum = sum(r.host_time_ms for r in counter.records if r.host_time_ms is not None)
            plain_in_propagate = counter.plain_forward_ms
            top = sorted((r for r in counter.records if r.time_ms is not None), key=lambda r: -r.time_ms)[:5]
            alone = alone_ms(counter, args, kwargs, [r.name for r in top], device)  # all 0 on CPU (no kernels)
            top5 = "; ".join(f"{r.name} {r.time_ms:.3f}" + (f" (alone {a:.3f})" if (a := alone.get(r.name)) else "")
                             for r in top)
            within = [abs(r.time_ms / a - 1) <= 0.15 for r in top if (a := alone.get(r.name))]
            # FLOPs only vs plain forward, interleaved rounds (counter already traced)
            counter.propagate(*args, **kwargs, timing=False)
            ratios, extra_ms = [], []
            for _ in range(rounds):
                p = timed_ms(plain, device)
                f = timed_ms(lambda: counter.propagate(*args, **kwargs, timing=False), device)
                ratios.append(f / p)
                extra_ms.append(f - p)
            nodes = sum(1 for r in counter.records if r.op not in ("placeholder", "output"))
            row = {"kernel ms (profiler)": kernel_ms, "kernels": kernel[0][1] if kernel else None,
                   "plain wall ms": wall_ms, "plain ms (propagate's)": plain_in_propagate,
                   "sum node ms": node_sum, "sum host ms": host_sum,
                   "sum / kernel": node_sum / kernel_ms if kernel_ms else None,
                   "sum / wall": node_sum / wall_ms if wall_ms else None,
                   "GPU busy (propagate)": busy, "timing note": note,
                   "flops-only / plain (median)": statistics.median(ratios),
                   "flops-only us/node over plain": 1000 * statistics.median(extra_ms) / max(nodes, 1),
                   "total GFLOPs": counter.total_flops / 1e9,
                   "kernel ms (per-op attribution)": kernel_alt, "top5 nodes ms": top5,
                   "top5 within 15 % of alone": f"{sum(within)}/{len(within)}" if within else None}
            del counter, model, args, kwargs
            free(device)
            return row
        s.row({"model": name, "batch": batch, "dtype": dname}, run)
    s.notes.append("kernel ms: median over profiled plain forwards of the summed CUDA device events (kernels, memcpy, "
                   "memset); sum node ms: sum of per-node medians of propagate(x, warmup, repeat), each node's device "
                   "time from the profiler's records (torch_flops.device_time); alone: the node's op replayed by itself "
                   "on its inputs (graph nodes only), target within 15 %; target sum/kernel 0.95–1.05, "
                   "flops-only/plain <= 1.25 at batch 1 and <= 1.05 at resnet50 b64 (issue 19); us/node over plain: "
                   "what a FLOPs-only run adds to a plain forward per record (graph node or call inside a leaf), "
                   "the figure to cut if that target is missed")
    try:
        import timm.layers
        s.notes.append(f"timm fused attention (F.sdpa): {timm.layers.use_fused_attn()}")
    except Exception as error:  # noqa: BLE001
        s.notes.append(f"timm fused attention unknown: {error}")


# -- section 3 -------------------------------------------------------------------------------------------
def section_memory(s: Section, device: torch.device, quick: bool) -> None:
    cuda = cuda_ok(device)
    if not cuda:
        s.status = "skipped: no CUDA (allocator); analytic peaks computed on CPU at small sizes as a dry run"
    small = 2 if quick else None
    cases = [("resnet50", 1, torch.float32), ("resnet50", small or 64, torch.float32),
             ("vit_base_patch16_224", 1, torch.float32), ("vit_base_patch16_224", small or 32, torch.bfloat16),
             ("tv_vit_b_16", small or 8, torch.float32), ("convnext_tiny", small or 16, torch.float32)]
    for name, batch, dtype in cases:
        def run(name=name, batch=batch, dtype=dtype) -> dict[str, Any]:
            model, size = vision_model(name, quick)
            model = model.eval().to(device=device, dtype=dtype)
            x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
            counter = TorchFLOPsByFX(model)
            counter.propagate(x, warmup=1 if cuda else 0)
            summary = counter.activation_memory()
            analytic = summary.peak_activation_bytes
            input_bytes = x.numel() * x.element_size()
            measured = None
            if cuda:
                del x
                free(device)
                sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                baseline = torch.cuda.memory_allocated(device)  # the model only
                x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
                with torch.no_grad():
                    out = model(x)
                sync(device)
                measured = torch.cuda.max_memory_allocated(device) - baseline
                del out
            row = {"analytic peak MiB": analytic / MiB, "peak node": summary.peak_node,
                   "in 512-B blocks MiB": mib(summary.allocator_peak_bytes),
                   "plain forward allocator peak MiB": mib(measured),
                   "input MiB": input_bytes / MiB, "diff %": pct(analytic, measured),
                   "within 10 %": abs(pct(analytic, measured)) <= 10 if measured else None,
                   "run's allocator peak MiB": mib(summary.measured_peak_bytes),
                   "at node": summary.measured_peak_node, "inside that op MiB": mib(summary.measured_inside_bytes),
                   "diff % (analytic + inside)": pct(analytic + summary.measured_inside_bytes, measured)
                   if measured and summary.measured_inside_bytes is not None else None}
            inside = sorted((r for r in counter.records if r.mem_inside_bytes), key=lambda r: -r.mem_inside_bytes)[:3]
            row["most inside ops (MiB)"] = ", ".join(f"{r.name} {r.mem_inside_bytes / MiB:.2f}" for r in inside) or None
            del counter, model, x
            free(device)
            return row
        s.row({"model": name, "batch": batch, "dtype": str(dtype).removeprefix("torch.")}, run)
    s.notes.append("plain forward allocator peak: max_memory_allocated of a plain no_grad forward minus memory_allocated "
                   "with only the model resident (the input allocated after the baseline, so included); target: the "
                   "analytic peak within 10 % of it (issue 19)")
    s.notes.append("run's allocator peak: the counter's own measurement (mem_peak_bytes, the allocator's peak counter "
                   "reset at each node, from the warm timed run) at its peak node, with what that op allocated beyond "
                   "its inputs and outputs (mem_inside_bytes: cuDNN/cuBLAS workspaces, temporaries); the three ops "
                   "with the most inside them")


# -- section 4 -------------------------------------------------------------------------------------------
class FlopCount:
    """``FlopCounterMode`` total of a call."""

    def __init__(self) -> None:
        from torch.utils.flop_counter import FlopCounterMode
        self.mode = FlopCounterMode(display=False)

    def __enter__(self) -> FlopCount:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return self.mode.get_total_flops()


def real_step(model: nn.Module, inputs: dict[str, torch.Tensor], make_inputs: Callable[[], dict[str, torch.Tensor]],
              device: torch.device, foreach: bool | None) -> dict[str, Any]:
    """Peaks of two forward + backward + AdamW steps of a copy of ``model`` (``zero_grad(set_to_none=True)``
    between them), each from a baseline holding the copy and its inputs: the first step makes the
    optimizer's state after its backward, every later step holds it throughout, as the analytic peak
    does. Also FlopCounterMode's forward and backward totals (a third step, not measured for memory)."""
    cuda = cuda_ok(device)
    twin = copy.deepcopy(model)
    free(device)
    step_inputs = make_inputs()
    sync(device)
    baseline = torch.cuda.memory_allocated(device) if cuda else None
    optimizer = torch.optim.AdamW(twin.parameters(), foreach=foreach)
    peaks = []
    for _ in range(2):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        loss = floating_sum(twin(**step_inputs))
        loss.backward()
        optimizer.step()
        del loss
        sync(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - baseline if cuda else None)
        optimizer.zero_grad(set_to_none=True)
    # FlopCounterMode on the same step
    with FlopCount() as fwd:
        loss = floating_sum(twin(**step_inputs))
    with FlopCount() as bwd:
        loss.backward()
    result = {"first step peak": peaks[0], "peak": peaks[1], "fcm forward": fwd.total, "fcm backward": bwd.total}
    del twin, optimizer, loss, step_inputs
    free(device)
    return result


def backward_kernel_ms(model: nn.Module, inputs: dict[str, torch.Tensor], device: torch.device) -> float | None:
    """Kernel time of a plain backward: a profiled forward + backward less a profiled forward (medians)."""
    trainable = [p for p in model.parameters() if p.requires_grad]

    def forward() -> torch.Tensor:
        return floating_sum(model(**inputs))

    def both() -> None:
        torch.autograd.grad(forward(), trainable)
    for _ in range(2):
        both()
    fwd = [kernel_time_ms(forward, device)[0] for _ in range(3)]
    total = [kernel_time_ms(both, device)[0] for _ in range(3)]
    if None in fwd or None in total:
        return None
    return statistics.median(total) - statistics.median(fwd)


def section_training_memory(s: Section, device: torch.device, quick: bool) -> None:
    cuda = cuda_ok(device)
    if not cuda:
        s.notes.append("skipped: no CUDA (allocator peak); counting and FlopCounterMode ran on CPU")
    cases: list[tuple[str, Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]]] = []

    def resnet() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        model, size = vision_model("resnet50", quick)
        return model, {"x": torch.randn(2 if quick else 8, 3, size, size)}
    cases = [("resnet50", resnet), ("gpt2", lambda: gpt2_lm(quick))]
    for name, build in cases:
        def run(build=build) -> dict[str, Any]:
            torch.manual_seed(0)
            model, cpu_inputs = build()
            model = model.eval().to(device)
            inputs = {k: v.to(device) for k, v in cpu_inputs.items()}
            counter = TorchFLOPsByFX(model)
            counter.propagate(**inputs, backward=True, optimizer=torch.optim.AdamW, loss_fn=floating_sum)
            tm = counter.training_memory()
            ours_fwd, ours_bwd = counter.total_flops, counter.total_backward_flops
            opt_flops = counter.optimizer_step.flops if counter.optimizer_step is not None else None
            unsupported_bwd = sorted({op for r in counter.records for op in r.backward_unsupported_ops})
            bwd_ms = sum(r.backward_time_ms or 0.0 for r in counter.records) + (counter.backward_unattributed_ms or 0.0)
            bwd_top = sorted(counter.records, key=lambda r: -(r.backward_time_ms or 0.0))[:3]
            del counter
            bwd_kernel = backward_kernel_ms(model, inputs, device) if cuda else None
            input_bytes = sum(v.numel() * v.element_size() for v in inputs.values())
            rows = {}
            for foreach in (None, False):
                real = real_step(model, inputs, lambda: {k: v.clone() for k, v in inputs.items()}, device, foreach)
                rows[foreach] = real
            real = rows[None]
            # the analytic peak counts the parameters; the measured one is above a baseline holding them
            measured = real["peak"] + tm.params_bytes if real["peak"] is not None else None
            measured_nf = rows[False]["peak"] + tm.params_bytes if rows[False]["peak"] is not None else None
            first = real["first step peak"] + tm.params_bytes if real["first step peak"] is not None else None
            out = {"params MiB": tm.params_bytes / MiB, "grads MiB": tm.gradient_bytes / MiB,
                   "adam state MiB": tm.optimizer_state_bytes / MiB, "saved act MiB": tm.saved_activation_bytes / MiB,
                   "bwd peak MiB": tm.backward_peak_bytes / MiB, "analytic peak MiB": tm.peak_bytes / MiB,
                   "input MiB": input_bytes / MiB,
                   "measured peak MiB (params + step)": mib(measured),
                   "diff %": pct(tm.peak_bytes, measured),
                   "first step's peak MiB": mib(first),
                   "measured, foreach=False MiB": mib(measured_nf),
                   "diff % (foreach=False)": pct(tm.peak_bytes, measured_nf),
                   "fwd GFLOPs ours": ours_fwd / 1e9, "fwd GFLOPs FCM": real["fcm forward"] / 1e9,
                   "fwd ours/FCM": ours_fwd / real["fcm forward"] if real["fcm forward"] else None,
                   "bwd GFLOPs ours": ours_bwd / 1e9, "bwd GFLOPs FCM": real["fcm backward"] / 1e9,
                   "bwd ours/FCM": ours_bwd / real["fcm backward"] if real["fcm backward"] else None,
                   "AdamW MFLOPs ours": opt_flops / 1e6 if opt_flops is not None else None,
                   "bwd ms ours (per op + rest)": bwd_ms, "bwd kernel ms (plain)": bwd_kernel,
                   "bwd ours/kernel": bwd_ms / bwd_kernel if bwd_kernel else None,
                   "top3 bwd ops ms": "; ".join(f"{r.name} {r.backward_time_ms or 0.0:.3f}" for r in bwd_top),
                   "bwd unsupported ops": ", ".join(unsupported_bwd) or "none"}
            del model, inputs
            free(device)
            return out
        s.row({"model": name, "dtype": "fp32", "mode": "eval"}, run)
    s.notes.append("measured peak: max_memory_allocated of the second forward + loss.backward() + AdamW.step() on a "
                   "deepcopy of the model (zero_grad(set_to_none=True) after each step; the first step's peak, made "
                   "before the optimizer's state exists, beside it), above a baseline holding both models and the "
                   "inputs, plus the parameters' bytes (the analytic peak counts them); target within 10 % (issue 21); "
                   "loss = fp32 sum of the logits/output; FCM = torch.utils.flop_counter.FlopCounterMode "
                   "(matmul/conv/attention only, 2k per product: ours count every op, 2k-1); bwd ms ours: the records' "
                   "backward_time_ms (device time between owner switches, from the profiler's records) plus the "
                   "unattributed rest, against the kernel time of a plain backward (target near 1)")


# -- section 5 -------------------------------------------------------------------------------------------
class OpLog(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def section_backward_cuda(s: Section, device: torch.device, quick: bool) -> None:
    import transformers as T
    cuda = cuda_ok(device)
    if not cuda:
        s.status = "skipped: no CUDA (fp16/bf16 on CUDA); CPU fp32 and bf16 counted as a dry run"
    layers, hidden, heads, seq, batch = (2, 128, 2, 32, 2) if quick else (2, 512, 8, 512, 2)  # head_dim 64

    def build() -> nn.Module:
        torch.manual_seed(0)
        return T.LlamaForCausalLM(T.LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                                                num_key_value_heads=heads // 2, intermediate_size=2 * hidden,
                                                vocab_size=1000, use_cache=False, attn_implementation="sdpa")).eval()
    torch.manual_seed(1)
    ids = torch.randint(0, 1000, (batch, seq))
    runs = [("cpu", "fp32")] + ([("cuda", "fp16"), ("cuda", "bf16")] if cuda else [("cpu", "bf16")])
    reference: dict[str, int] = {}
    for where, dname in runs:
        def run(where=where, dname=dname) -> dict[str, Any]:
            dev = device if where == "cuda" else torch.device("cpu")
            model = build().to(device=dev, dtype=DTYPES[dname])
            x = ids.to(dev)
            counter = TorchFLOPsByFX(model)
            counter.propagate(input_ids=x, backward=True, loss_fn=floating_sum)
            fwd, bwd = counter.total_flops, counter.total_backward_flops
            unsupported = sorted({op for r in counter.records for op in r.backward_unsupported_ops})
            del counter
            log_fwd, log_bwd = OpLog(), OpLog()
            with log_fwd:
                loss = floating_sum(model(input_ids=x))
            with log_bwd:
                loss.backward()
            attention = lambda log: ", ".join(f"{k} x{v}" for k, v in sorted(log.ops.items()) if "attention" in k or "sdpa" in k) or "none"  # noqa: E731
            if where == "cpu" and dname == "fp32":
                reference.update(fwd=fwd, bwd=bwd)
            row = {"fwd FLOPs": fwd, "bwd FLOPs": bwd,
                   "bwd equal to cpu fp32": bwd == reference.get("bwd") if reference else None,
                   "fwd equal to cpu fp32": fwd == reference.get("fwd") if reference else None,
                   "backward_unsupported_ops": ", ".join(unsupported) or "none",
                   "attention ops fwd": attention(log_fwd), "attention ops bwd": attention(log_bwd),
                   "bwd aten ops": ", ".join(f"{k} x{v}" for k, v in log_bwd.ops.most_common(12))}
            del model, x, loss
            free(device)
            return row
        s.row({"run on": where, "dtype": dname, "layers": layers, "hidden": hidden, "heads": heads, "seq": seq, "batch": batch}, run)


SECTIONS: dict[int, tuple[str, Callable[[Section, torch.device, bool], None]]] = {
    0: ("Trace pre-flight (issue 19)", section_trace),
    1: ("Same count on every device (issue 20)", section_same_count),
    2: ("Timing truth (issue 19)", section_timing),
    3: ("Activation memory vs allocator (issue 19)", section_memory),
    4: ("Training memory vs allocator, FLOPs vs FlopCounterMode (issue 21)", section_training_memory),
    5: ("Backward FLOPs on CUDA kernels (issue 21)", section_backward_cuda),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (the CPU dry run)")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results" / "gpu_check"))
    parser.add_argument("--sections", default="0,2,3,4,5,1", help="comma-separated section numbers, run in this order")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA requested but not available: running on CPU", file=sys.stderr)
        device = torch.device("cpu")
    try:
        wanted = [int(n) for n in args.sections.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--sections: comma-separated numbers from {sorted(SECTIONS)}, got {args.sections!r}")
    if not wanted or set(wanted) - set(SECTIONS):
        parser.error(f"--sections: numbers from {sorted(SECTIONS)}, got {args.sections!r}")
    out = Path(args.out)
    sys.path.insert(0, str(ROOT / "tests"))
    env = environment(device) | {"quick": args.quick, "sections": wanted}
    print(json.dumps(env, indent=1), flush=True)
    done: list[Section] = []
    start_all = time.perf_counter()
    for number in wanted:
        title, fn = SECTIONS[number]
        section = Section(number, title, out)
        print(f"\n== {number}. {title}", flush=True)
        start = time.perf_counter()
        try:
            fn(section, device, args.quick)
        except Exception as error:  # noqa: BLE001 - recorded, the next section runs
            section.status = "failed"
            section.error = traceback.format_exc(limit=8)
            print(f"  section {number} failed: {type(error).__name__}: {error}", flush=True)
        section.seconds = time.perf_counter() - start
        done.append(section)
        free(device)
        write(out, env, done)
    print(f"\n== summary ({time.perf_counter() - start_all:.0f} s; files in {out})")
    for s in done:
        bad = sum(1 for r in s.rows if "error" in r)
        print(f"{s.number}. {s.title}: {s.status}, {len(s.rows)} rows, {bad} row errors, {s.seconds:.1f} s")
        if s.number == 1:
            unequal = [f"{r['model']}/{r['attention']}/{r['dtype']}" for r in s.rows if r.get("equal") is False]
            print(f"   unequal counts: {', '.join(unequal) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
