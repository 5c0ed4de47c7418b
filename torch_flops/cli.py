"""``torch-flops MODEL``: profile a model from the command line.

MODEL is a torchvision name (``resnet50``), a timm name (``timm:vit_base_patch16_224``), a transformers
config available locally (``hf:gpt2``), a factory (``path/to/file.py:make_model`` or
``package.module:make_model``), or a saved whole module (``model.pt``, with ``--trust-pickle``).

Exit codes: 0 success, 1 the model failed to run, 2 bad arguments or unknown model, 3 a missing
optional package.
"""

from __future__ import annotations

import argparse
import fnmatch
import difflib
import importlib
import importlib.util
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torch_flops.engine import VIEWS, TorchFLOPsByFX
from torch_flops.render import UNITS, VIEW_KINDS
from torch_flops.rules.attention import ATTENTION_MODES

EXIT_RUN, EXIT_USAGE, EXIT_MISSING = 1, 2, 3


class CliError(Exception):
    """A message for the shell user and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CliError(f"this model needs the '{module}' package: pip install 'torch_flops[{extra}]'", EXIT_MISSING) from None


def _close_matches(name: str, candidates: Sequence[str]) -> str:
    matches = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def _torchvision(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torchvision = _require("torchvision", "vision")
    names = torchvision.models.list_models()
    if name not in names:
        timm_hint = ""
        try:
            import timm

            if name in timm.list_models():
                timm_hint = f"; timm has it: timm:{name}"
        except ImportError:
            pass
        raise CliError(f"unknown model {name!r}{_close_matches(name, names)}{timm_hint}")
    size = 299 if name.startswith("inception") else 520 if name.startswith(("fcn", "deeplab", "lraspp")) else 224
    return torchvision.models.get_model(name, weights=None), (1, 3, size, size)


def _timm(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    timm = _require("timm", "vision")
    names = timm.list_models()
    if name not in names:
        raise CliError(f"unknown timm model {name!r}{_close_matches(name, names)}")
    model = timm.create_model(name, pretrained=False)
    return model, (1, *model.pretrained_cfg.get("input_size", (3, 224, 224)))


def _transformers(name: str, causal_lm: bool = False) -> tuple[nn.Module, tuple[int, ...]]:
    transformers = _require("transformers", "hf")
    try:
        config = transformers.AutoConfig.from_pretrained(name, local_files_only=True)
    except Exception as error:
        raise CliError(f"no transformers config {name!r} available locally (nothing is downloaded): {error}") from None
    if causal_lm:  # generation needs the LM head and the cache
        try:
            return transformers.AutoModelForCausalLM.from_config(config), (1, 128)
        except ValueError as error:
            raise CliError(f"--generate needs a causal language model; {name!r} is not one: {error}") from None
    return transformers.AutoModel.from_config(config), (1, 128)


def _factory(spec: str) -> nn.Module:
    target, _, attribute = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise CliError(f"no such file: {target}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise CliError(f"cannot import {target!r}: {error}") from None
    factory = getattr(module, attribute, None)
    if factory is None:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise CliError(f"{target} has no {attribute!r}{_close_matches(attribute, names)}")
    model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise CliError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return model


def _saved(path: str, trust_pickle: bool) -> nn.Module:
    if not Path(path).is_file():
        raise CliError(f"no such file: {path}")
    if _is_torchscript(path):  # counted whole, by the aten-level fallback
        if not trust_pickle:
            raise CliError(f"{path} is a TorchScript archive (torch.jit.save), and loading it runs the code it holds; "
                           f"pass --trust-pickle if you trust it")
        return torch.jit.load(path, map_location="cpu")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        if not trust_pickle:
            raise CliError(
                f"{path} holds a pickled object, and unpickling runs code from the file; "
                f"pass --trust-pickle if you trust it"
            ) from None
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(loaded, nn.Module):
        return loaded
    if isinstance(loaded, dict):
        raise CliError(
            f"{path} is a state dict: it has weights but no architecture. Name the architecture as MODEL "
            f"and pass the file with --weights {path}"
        )
    raise CliError(f"{path} holds a {type(loaded).__name__}, not a model")


def _is_torchscript(path: str) -> bool:
    """Whether ``path`` is an archive written by ``torch.jit.save`` (it holds ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.rpartition("/")[2] == "constants.pkl" for name in archive.namelist())


def load_model(spec: str, trust_pickle: bool = False, causal_lm: bool = False) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The model named by ``spec`` and its default input shape (``None`` when unknown); with ``causal_lm``
    a transformers config gives its ``...ForCausalLM``."""
    if spec.startswith("timm:"):
        return _timm(spec[5:])
    if spec.startswith("hf:"):
        return _transformers(spec[3:], causal_lm)
    if spec.endswith((".pt", ".pth")):
        return _saved(spec, trust_pickle), None
    if ":" in spec:
        return _factory(spec), None
    return _torchvision(spec)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes like 1,3,224,224, got {text!r}") from None
    if not shape or any(d < 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes like 1,3,224,224, got {text!r}")
    return shape


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse ``type`` for an int ``>= minimum`` (the bounds the Python API checks); ``what`` names
    the value in the error (argparse adds the option: ``argument --top: expected ..., got '0'``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int64": torch.int64, "int32": torch.int32,
}


def _peak_tflops(text: str) -> float | dict[str, float]:
    """``312`` or ``bf16=989.5,fp32=67`` (values checked by :func:`torch_flops.peaks.check_peaks`)."""
    try:
        if "=" not in text:
            return float(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return {key.strip(): float(value) for key, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or dtype=number pairs like bf16=989.5,fp32=67, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torch-flops", description="FLOPs, MACs, parameters and time of a PyTorch model, node by node.",
        epilog="MODEL: resnet50 | timm:vit_base_patch16_224 | hf:gpt2 | file.py:factory | package.module:factory | model.pt",
    )
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("--input-shape", type=_shape, action="append", metavar="1,3,224,224",
                        help="an input's shape (repeat for several inputs); default from the model where known")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                        help="input dtype (default float32; int64 token ids for transformers); a floating dtype "
                             "casts the model's parameters and buffers too")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--meta", action="store_true", help="shape-only: count without running real arithmetic")
    parser.add_argument("--view", choices=VIEWS, default="modules")
    parser.add_argument("--depth", type=_int_at_least(0, "a number of levels >= 0"), default=None, help="module hierarchy levels to show (modules view)")
    parser.add_argument("--top", type=_int_at_least(1, "a positive number of rows"), default=None,
                        help="show the N largest rows (by --sort, else by --unit; in tree order for the modules view)")
    parser.add_argument("--sort", default=None, help="sort rows by a field, largest first, e.g. flops, macs, params, time_ms")
    parser.add_argument("--format", choices=VIEW_KINDS, default="text")
    parser.add_argument("--unit", choices=UNITS, default="flops")
    parser.add_argument("--output", metavar="FILE", help="write the table to FILE instead of standard output")
    parser.add_argument("--weights", metavar="FILE", help="a state dict to load (weights_only=True)")
    parser.add_argument("--peak-tflops", type=_peak_tflops, default=None, metavar="TFLOPS",
                        help="the device's dense peak TFLOP/s: one number, or per dtype, e.g. bf16=989.5,fp32=67 "
                             "(default: the table of peaks for a known GPU, docs/peaks.md)")
    parser.add_argument("--peak-bandwidth", type=float, default=None, metavar="GB/S", help="the device's memory bandwidth in GB/s")
    parser.add_argument("--plot", metavar="FILE", help="write a roofline picture to FILE (PNG; needs matplotlib)")
    parser.add_argument("--warmup", type=_int_at_least(0, "a number of runs >= 0"), default=None,
                        help="untimed runs before the timed ones (default 2 on CUDA, 0 on CPU)")
    parser.add_argument("--repeat", type=_int_at_least(1, "a number of runs >= 1"), default=None,
                        help="timed runs; each node's median is reported (default 10 on CUDA, 1 on CPU)")
    parser.add_argument("--attention", choices=ATTENTION_MODES, default="dense",
                        help="scaled dot-product attention: count every score (dense) or only those the causal or "
                             "given mask leaves visible (causal)")
    parser.add_argument("--generate", type=_int_at_least(0, "a number of decode steps >= 0"), default=None, metavar="N",
                        help="count a prefill of the input's tokens (--input-shape BATCH,PROMPT), then N greedy decode "
                             "steps with the KV cache: FLOPs, bytes and intensity per phase (a causal language model)")
    parser.add_argument("--train", action="store_true",
                        help="count the backward pass too (of the sum of the floating outputs), charged to the forward ops")
    parser.add_argument("--optimizer", choices=sorted(_OPTIMIZERS), default=None,
                        help="with --train: add one optimizer step's FLOPs and its state to the training memory")
    parser.add_argument("--frozen", action="append", default=[], metavar="PATTERN",
                        help="with --train: parameters whose names match PATTERN (fnmatch, e.g. 'encoder.*') get no gradient")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow MODEL to be a pickled whole module (unpickling runs code from the file)")
    return parser


def make_inputs(model: nn.Module, shapes: list[tuple[int, ...]], dtype: torch.dtype | None, device: str) -> list[torch.Tensor]:
    inputs = []
    for shape in shapes:
        if dtype is not None and not dtype.is_floating_point or dtype is None and len(shape) == 2 and _is_text_model(model):
            vocab = getattr(getattr(model, "config", None), "vocab_size", 1000)
            inputs.append(torch.randint(0, vocab, shape, dtype=dtype or torch.int64, device=device))
        else:
            inputs.append(torch.randn(shape, dtype=dtype or torch.float32, device=device))
    return inputs


def _is_text_model(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "vocab_size") and not hasattr(config, "image_size")


def run(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    args = build_parser().parse_args(argv)
    if args.generate is not None and args.meta:
        raise CliError("--generate needs real tensors (each next token is the argmax of the logits): drop --meta")
    if args.train and (args.meta or args.generate is not None):
        raise CliError("--train counts one forward and backward on real tensors: drop --meta and --generate")
    if (args.frozen or args.optimizer) and not args.train:
        raise CliError("--frozen and --optimizer are for --train")
    model, default_shape = load_model(args.model, args.trust_pickle, causal_lm=args.generate is not None)
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CliError(f"{args.weights} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    shapes = args.input_shape or ([default_shape] if default_shape else None)
    if not shapes:
        raise CliError(f"no default input shape for {args.model}: pass --input-shape, e.g. --input-shape 1,3,224,224")
    dtype = _DTYPES.get(args.dtype) if args.dtype else None
    model = model.to(args.device)
    if dtype is not None and dtype.is_floating_point:  # weights in the inputs' dtype, as a half-precision run has them
        model = model.to(dtype)
    inputs = make_inputs(model, shapes, dtype, args.device)
    _freeze(model, args.frozen)
    try:
        counter = TorchFLOPsByFX(model, peak_tflops=args.peak_tflops, peak_bandwidth=args.peak_bandwidth,
                                 attention=args.attention)
    except ValueError as error:  # a peak that is not a positive number, an unknown dtype
        raise CliError(str(error)) from None
    if args.generate is not None:
        return _generate(args, model, inputs, counter, out)
    on_cuda = torch.device(args.device).type == "cuda"
    warmup = args.warmup if args.warmup is not None else (2 if on_cuda else 0)
    repeat = args.repeat if args.repeat is not None else (10 if on_cuda else 1)
    try:
        if args.meta:
            counter.propagate_shapes(*inputs)
        elif args.train:
            counter.propagate(*inputs, backward=True, optimizer=_OPTIMIZERS.get(args.optimizer))
        else:
            counter.propagate(*inputs, warmup=warmup, repeat=repeat)
    except TypeError as error:
        raise CliError(f"{args.model} cannot take inputs of shapes {shapes}: {error}", EXIT_RUN) from None
    try:
        text = counter.report(args.view, args.format, depth=args.depth, top=args.top, sort=args.sort, unit=args.unit)
    except ValueError as error:  # a field the view cannot sort by, a bad depth: the arguments, not the model
        raise CliError(str(error)) from None
    if args.format == "text":
        summary = f"total: {counter.total_flops:,} FLOPs, {counter.total_macs:,} MACs, {sum(p.numel() for p in model.parameters()):,} params"
        if counter.unsupported:
            summary += f", {len(counter.unsupported)} nodes not counted"
        if counter.leaf_modules:
            summary += f"; kept whole (not traceable): {', '.join(p or '(root)' for p in counter.leaf_modules)}"
        if args.train:
            backward, recompute = counter.total_backward_flops, counter.total_recompute_flops
            summary += f"\n{counter.step_totals_line()}"  # forward + backward (+ recompute) = their sum
            if counter.total_flops:
                summary += f"; the backward is {backward / counter.total_flops:.2f}x the forward"
            if counter.optimizer_step is not None:
                step = counter.optimizer_step.flops
                summary += (f"\n{args.optimizer} step: {step:,} FLOPs; training step: "
                            f"{counter.total_flops + backward + recompute + step:,} FLOPs")
            memory = counter.training_memory()
            summary += (f"\ntraining memory: {memory.peak_bytes:,} B at most = parameters {memory.params_bytes:,} + optimizer "
                        f"state {memory.optimizer_state_bytes:,} + saved activations {memory.saved_activation_bytes:,} + "
                        f"backward peak {max(memory.backward_peak_bytes, memory.gradient_bytes):,} (gradients "
                        f"{memory.gradient_bytes:,} in it)")
        text = f"{text}\n\n{summary}"
        if not args.meta:
            text += "\n" + throughput_line(counter.throughput_summary())
    if args.plot:
        try:
            counter.plot_roofline(args.plot)
        except ImportError as error:
            raise CliError(str(error), EXIT_MISSING) from None
        except ValueError as error:
            raise CliError(f"no roofline: {error}") from None
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        out(text)
    return 0


_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def _freeze(model: nn.Module, patterns: Sequence[str]) -> None:
    """``--frozen``: no gradient for the parameters whose names match one of ``patterns``."""
    if not patterns:
        return
    matched = [p for name, p in model.named_parameters() if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]
    if not matched:
        raise CliError(f"--frozen {' '.join(patterns)} matches no parameter of {type(model).__name__}")
    for parameter in matched:
        parameter.requires_grad_(False)


def _generate(args: argparse.Namespace, model: nn.Module, inputs: list[torch.Tensor], counter: TorchFLOPsByFX,
              out: Callable[[str], Any]) -> int:
    """``--generate N``: the prefill of the one input of token ids, then N decode steps."""
    from torch_flops import generation

    if len(inputs) != 1 or inputs[0].dim() != 2 or inputs[0].dtype.is_floating_point:
        raise CliError("--generate takes one input of token ids: --input-shape BATCH,PROMPT_LENGTH (--dtype int64)")
    try:
        counts, _ = generation.count_generation(model, inputs[0], args.generate, counter=counter)
    except (TypeError, ValueError, AttributeError) as error:
        raise CliError(f"{args.model} cannot generate with a KV cache: {type(error).__name__}: {error}", EXIT_RUN) from None
    text = generation.to_text(counts)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        out(text)
    return 0


def throughput_line(run: Any) -> str:
    """``achieved 1.234 TFLOP/s, 56.7 GB/s over 12.345 ms; MFU 12.34 % of 989.5 TFLOP/s (bf16, NVIDIA H100 SXM)``,
    or the rates and the message saying how to pass peaks."""
    if run.time_ms is None or run.tflops is None:
        return "throughput: not timed"
    line = f"achieved {run.tflops:.4g} TFLOP/s, {run.gbps:.4g} GB/s over {run.time_ms:.3f} ms (sum of per-node times)"
    if run.mfu is not None:
        return f"{line}; MFU {100 * run.mfu:.2f} % of {run.peak_tflops:g} TFLOP/s ({run.dtype_key}, {run.peaks.name})"
    return f"{line}; {run.message}"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except CliError as error:
        print(f"torch-flops: error: {error}", file=sys.stderr)
        return error.code
    except Exception as error:  # the model itself failed: say so in one line, not a traceback
        print(f"torch-flops: error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_RUN


if __name__ == "__main__":
    raise SystemExit(main())
