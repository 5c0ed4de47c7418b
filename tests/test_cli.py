"""The command line: models by name, factories and files; views and formats; errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import SimpleModel
from torch_flops import cli

FACTORY = '''
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(5, 4)

    def forward(self, x, y):
        return self.layer(x) + y


def make_simple():
    return nn.Sequential(nn.Linear(5, 4))


def make_two():
    return TwoInputs()


def make_conv():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 10))


class CausalSelfAttention(nn.Module):
    def forward(self, x):
        return nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True)


def make_causal_attention():
    return CausalSelfAttention()


class Checkpointed(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)  # called by that name: one call when tracing


def make_checkpointed():
    return Checkpointed()
'''


@pytest.fixture()
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(FACTORY)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_factory_file_nodes_view(factory_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([f"{factory_file}:make_simple", "--input-shape", "1,5", "--view", "nodes"], capsys)
    assert code == 0 and err == ""
    assert "FLOPs" in out.splitlines()[0]
    assert "total: 40 FLOPs, 24 MACs, 24 params" in out  # Linear(5, 4): 4 * (2*5 - 1) + 4; 4*5 + 4 MACs


def test_attention_option(factory_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = [f"{factory_file}:make_causal_attention", "--input-shape", "1,2,4,8"]
    code, out, _ = run(spec, capsys)
    assert code == 0 and "total: 1,080 FLOPs" in out  # every score: 1,048 + 32 for the causal mask
    code, out, _ = run([*spec, "--attention", "causal"], capsys)
    assert code == 0 and "total: 648 FLOPs" in out  # the 20 visible scores of 32 (tests/test_rules_attention.py)
    with pytest.raises(SystemExit) as info:  # argparse's usage error
        cli.main([*spec, "--attention", "sparse"])
    assert info.value.code == 2 and "invalid choice: 'sparse'" in capsys.readouterr().err


def test_several_inputs_json_and_output_file(factory_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out.json"
    code, out, _ = run([f"{factory_file}:make_two", "--input-shape", "2,5", "--input-shape", "2,4",
                        "--format", "json", "--view", "ops", "--output", str(output)], capsys)
    assert code == 0 and out == ""
    document = json.loads(output.read_text())
    assert [i["shape"] for i in document["inputs"]] == [[2, 5], [2, 4]]
    # Linear on (2, 5): 8 * 9 + 8 = 80; + y: 8
    assert document["totals"]["flops"] == 88
    assert {r["op_type"]: r["flops"] for r in document["rows"]} == {"nn.Linear": 80, "operator.add": 8}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_floating_dtype_casts_the_model(factory_file: Path, dtype: str, capsys: pytest.CaptureFixture[str]) -> None:
    # on (1, 3, 4, 4): conv 64 outputs over 3*3*3 = 27: 64 * (2*27 - 1) + 64 = 3,456; BatchNorm 4 * 64 = 256;
    # Linear(64, 10): 10 * (2*64 - 1) + 10 = 1,280; total 3,456 + 256 + 1,280 = 4,992, as in float32
    totals = {}
    for name in ("float32", dtype):
        code, out, err = run([f"{factory_file}:make_conv", "--input-shape", "1,3,4,4", "--dtype", name,
                              "--format", "json", "--view", "ops"], capsys)
        assert code == 0 and err == "", err
        document = json.loads(out)
        assert [i["dtype"] for i in document["inputs"]] == [name]
        totals[name] = document["totals"]["flops"]
    assert totals == {"float32": 4992, dtype: 4992}


def test_torchvision_model_with_unit_and_depth(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["resnet18", "--depth", "1", "--unit", "macs", "--format", "md"], capsys)
    assert code == 0
    assert out.splitlines()[0].startswith("| Module") and "MACs" in out.splitlines()[0]
    assert "| conv1 " in out and "118,013,952" in out


def test_unknown_model_suggests_close_matches(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["resnet5"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("torch-flops: error: unknown model 'resnet5'; did you mean resnet50")
    code, _, err = run(["timm:vit_base_patch16_22"], capsys)
    assert code == 2 and "did you mean vit_base_patch16_224" in err


def test_missing_package_names_the_extra() -> None:
    with pytest.raises(cli.CliError, match=r"needs the 'no_such_package_xyz' package: pip install 'torch_flops\[vision\]'") as info:
        cli._require("no_such_package_xyz", "vision")
    assert info.value.code == 3


def test_state_dict_and_pickled_module_files(tmp_path: Path, factory_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = SimpleModel()
    weights, pickled = tmp_path / "weights.pt", tmp_path / "whole.pt"
    torch.save(model.state_dict(), weights)
    torch.save(model, pickled)
    code, _, err = run([str(weights)], capsys)
    assert code == 2 and "is a state dict: it has weights but no architecture" in err
    code, _, err = run([str(pickled), "--input-shape", "1,5"], capsys)
    assert code == 2 and "unpickling runs code from the file; pass --trust-pickle" in err
    code, out, _ = run([str(pickled), "--input-shape", "1,5", "--trust-pickle"], capsys)
    assert code == 0 and "total: 40 FLOPs" in out
    torch.save(torch.nn.Sequential(torch.nn.Linear(5, 4)).state_dict(), weights)
    code, out, _ = run([f"{factory_file}:make_simple", "--input-shape", "1,5", "--weights", str(weights)], capsys)
    assert code == 0 and "total: 40 FLOPs" in out


def test_usage_errors(factory_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([f"{factory_file}:make_simple"], capsys)
    assert code == 2 and "no default input shape" in err and "--input-shape" in err
    code, _, err = run([f"{factory_file}:make_simpel", "--input-shape", "1,5"], capsys)
    assert code == 2 and "has no 'make_simpel'; did you mean make_simple" in err
    code, _, err = run([f"{factory_file}:make_simple", "--input-shape", "1,7"], capsys)
    assert code == 1 and "failed on inputs with shapes [[1, 7]]" in err
    with pytest.raises(SystemExit) as info:
        cli.main(["resnet18", "--input-shape", "1,three"])
    assert info.value.code == 2


def test_python_dash_m(factory_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "torch_flops", f"{factory_file}:make_simple", "--input-shape", "1,5", "--view", "ops"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "nn.Linear" in result.stdout and "total: 40 FLOPs" in result.stdout


def test_train_counts_the_backward_and_frozen_parameters_get_no_gradient(factory_file: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    spec = [f"{factory_file}:make_simple", "--input-shape", "2,5", "--train"]
    code, out, _ = run(spec, capsys)
    forward = 2 * 4 * (2 * 5 - 1) + 2 * 4  # Linear(5, 4) on (2, 5): 80
    backward = 4 * 5 * (2 * 2 - 1) + 4 * (2 - 1)  # weight gradient (4, 2) @ (2, 5): 60, bias gradient: 4
    assert code == 0 and f"forward {forward:,} FLOPs" in out and f" + backward {backward:,} FLOPs" in out
    assert f" = {forward + backward:,} FLOPs" in out and f"the backward is {backward / forward:.2f}x the forward" in out
    code, out, _ = run([*spec, "--optimizer", "sgd"], capsys)
    step = 2 * (4 * 5 + 4)  # plain SGD: p - lr * g, 2 FLOPs per parameter (docs: "Optimizer step")
    assert code == 0 and f"sgd step: {step:,} FLOPs; training step: {forward + backward + step:,} FLOPs" in out
    assert "training memory:" in out and f"parameters {(4 * 5 + 4) * 4:,}" in out
    code, out, _ = run([*spec, "--frozen", "0.bias"], capsys)
    assert code == 0 and f" + backward {4 * 5 * 3:,} FLOPs" in out
    code, _, err = run([*spec, "--frozen", "nope.*"], capsys)
    assert code != 0 and "--frozen nope.* matches no parameter" in err
    code, _, err = run([*spec, "--meta"], capsys)
    assert code != 0 and "--train" in err


def test_train_shows_activation_checkpointing_s_recompute_apart(factory_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([f"{factory_file}:make_checkpointed", "--input-shape", "2,5", "--train", "--optimizer", "sgd"], capsys)
    forward = 2 * 4 * (2 * 5 - 1) + 2 * 4 + 2 * 4 + 2 * 3 * (2 * 4 - 1) + 2 * 3  # 80 + relu 8 + 48 = 136
    backward = (4 * 5 * (2 * 2 - 1) + 4 * (2 - 1)  # Linear(5, 4): weight 60 and bias 4, no input gradient
                + 2 * 4  # relu
                + 2 * 4 * (2 * 3 - 1) + 3 * 4 * (2 * 2 - 1) + 3 * (2 - 1))  # Linear(4, 3): input 40, weight 36, bias 3
    recompute = 2 * 4 * (2 * 5 - 1) + 2 * 4 + 2 * 4  # the first Linear and the relu run again: 88
    step = 2 * (4 * 5 + 4 + 3 * 4 + 3)  # plain SGD, 2 per parameter
    assert code == 0 and f" + backward {backward:,} FLOPs" in out and f" + recompute {recompute:,} FLOPs" in out
    assert f" = {forward + backward + recompute:,} FLOPs" in out
    assert f"training step: {forward + backward + recompute + step:,} FLOPs" in out
    assert "Recompute FLOPs" in out and "Backward time (ms)" in out  # the module table's columns
    code, out, _ = run([f"{factory_file}:make_simple", "--input-shape", "2,5", "--train"], capsys)
    assert code == 0 and "recompute" not in out and "Recompute" not in out
