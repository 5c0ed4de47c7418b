"""The torchvision results table: profile every classification model and write the committed pages.

Not in the default run: ``pytest -m benchmark tests/test_benchmarks.py`` regenerates
``tests/benchmarks/<model>.md``, ``tests/benchmarks/README.md`` and
``tests/benchmarks/madds-vs-parameters.svg``.
"""

from pathlib import Path

import pytest
import torch

from torch_flops import profile

torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.benchmark

OUT = Path(__file__).parent / "benchmarks"
MODELS = [
    "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2",
    "resnext50_32x4d", "resnext101_32x8d", "densenet121", "densenet161", "densenet169", "densenet201",
    "googlenet", "inception_v3", "squeezenet1_0", "squeezenet1_1", "mobilenet_v2", "mobilenet_v3_small",
    "mobilenet_v3_large", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "mnasnet0_5", "mnasnet1_0",
]
RESULTS: dict[str, tuple[int, int, int]] = {}


def input_size(name: str) -> int:
    return 299 if name == "inception_v3" else 224


def build(name: str) -> torch.nn.Module:
    kwargs = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(name, weights=None, **kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_profile_model(name: str) -> None:
    size = input_size(name)
    model = build(name)
    macs, params, info = profile(model, torch.randn(1, 3, size, size), verbose=False)
    assert params == sum(p.numel() for p in model.parameters())
    assert macs == sum(layer.macs for layer in info.layers) > 0
    assert not [r for r in info.records if r.status.value == "unsupported"]
    page = f"# {name}\n\nInput: `(1, 3, {size}, {size})`. MACs and parameters per layer ([conventions](../../docs/conventions.md)).\n\n"
    (OUT / f"{name}.md").write_text(page + info.summary(kind="md") + "\n")
    RESULTS[name] = (size, macs, params)


def test_write_summary_and_plot() -> None:
    missing = [name for name in MODELS if name not in RESULTS]
    if missing:
        pytest.skip(f"run the whole file: no results for {missing}")
    lines = ["# torchvision classification models", "", "Profiled by `torch_flops.profile` at batch 1.", "",
             "| Model | Input size | MACs [G] | Params [M] |", "|---|---|---:|---:|"]
    for name in MODELS:
        size, macs, params = RESULTS[name]
        lines.append(f"| [{name}]({name}.md) | {size} x {size} | {macs / 1e9:.3f} | {params / 1e6:.3f} |")
    (OUT / "README.md").write_text("\n".join(lines) + "\n")

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "torch_flops"  # stable ids: the committed file only changes with the data
    fig, ax = plt.subplots(figsize=(10, 7))
    for name in MODELS:
        _, macs, params = RESULTS[name]
        ax.scatter(params / 1e6, macs / 1e9, s=18)
        ax.annotate(name, (params / 1e6, macs / 1e9), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Parameters [M]")
    ax.set_ylabel("MACs [G]")
    ax.set_title("torchvision classification models (torch_flops.profile)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "madds-vs-parameters.svg", metadata={"Date": None})
    plt.close(fig)
