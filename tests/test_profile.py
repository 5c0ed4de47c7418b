"""The layer-wise view: profile(), LayerInfo.summary() and clever_format."""

import pytest
import torch
from torch import nn

from models import SimpleModel
from torch_flops import CostRuleError, clever_format, profile

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def resnet18_info():
    return profile(torchvision.models.resnet18(), tensor=torch.randn(1, 3, 224, 224), verbose=False)


def test_resnet18_totals_and_rows(resnet18_info) -> None:
    macs, params, info = resnet18_info
    assert params == 11_689_512  # torchvision's figure: learnable parameters, no BN running stats
    assert macs == 1_824_034_280
    rows = {layer.path: (layer.macs, layer.params) for layer in info.layers}
    assert rows["conv1"] == (64 * 112 * 112 * 3 * 49, 9_408) == (118_013_952, 9_408)
    assert rows["bn1"] == (64 * 112 * 112 * 4, 128) == (3_211_264, 128)
    assert rows["relu"] == (0, 0) and rows["maxpool"] == (0, 0)
    assert rows["layer4.1.conv2"] == (512 * 7 * 7 * 512 * 9, 2_359_296) == (115_605_504, 2_359_296)
    assert rows["layer4.1.bn2"] == (512 * 7 * 7 * 4, 1_024) == (100_352, 1_024)
    assert rows["avgpool"] == (512 * 49, 0) == (25_088, 0)
    assert rows["fc"] == (1000 * 512 + 1000, 513_000) == (513_000, 513_000)
    # rows sum to the totals; containers (BasicBlock, Sequential) get no row of their own
    assert sum(layer.macs for layer in info.layers) == macs
    assert sum(layer.params for layer in info.layers) == params
    assert "layer1.0" not in rows and "layer1" not in rows
    assert [layer.path for layer in info.layers][:4] == ["conv1", "bn1", "relu", "maxpool"]


def test_batch_two_doubles_macs_not_params(resnet18_info) -> None:
    macs, params, info = resnet18_info
    macs2, params2, info2 = profile(torchvision.models.resnet18(), torch.randn(2, 3, 224, 224), verbose=False)
    assert macs2 == 2 * macs and params2 == params
    assert [layer.macs for layer in info2.layers] == [2 * layer.macs for layer in info.layers]


def test_text_summary_has_shapes_without_batch_and_total_row(resnet18_info) -> None:
    _, _, info = resnet18_info
    lines = info.summary().splitlines()
    assert lines[0].split() == ["Name", "Class", "Input", "shape", "Output", "shape", "MACs", "Params"]
    assert lines[2].split() == ["conv1", "Conv2d", "3", "x", "224", "x", "224", "64", "x", "112", "x", "112", "118,013,952", "9,408"]
    assert lines[-1].split() == ["Total", "ResNet", "3", "x", "224", "x", "224", "1000", "1,824,034,280", "11,689,512"]
    assert str(info) == info.summary()


def test_csv_markdown_clever_and_ratio(resnet18_info) -> None:
    _, _, info = resnet18_info
    csv_lines = info.summary(kind="csv").splitlines()
    assert csv_lines[0] == "Name,Class,Input shape,Output shape,MACs,Params"
    assert csv_lines[1] == "conv1,Conv2d,3 x 224 x 224,64 x 112 x 112,118013952,9408"
    assert csv_lines[-1] == "Total,ResNet,3 x 224 x 224,1000,1824034280,11689512"
    md = info.summary(kind="md", fmt="clever").splitlines()
    assert md[0].startswith("| Name ") and set(md[1]) <= {"|", "-", ":"}
    assert [cell.strip() for cell in md[2].split("|")[5:7]] == ["118.01M", "9.41K"]
    ratio = info.summary(kind="csv", fmt="ratio").splitlines()
    assert ratio[0].endswith("MACs [%],Params [%]")
    assert ratio[1].endswith(",6.47,0.08")  # 118,013,952 / 1,824,034,280; 9,408 / 11,689,512
    assert ratio[-1].endswith(",100.00,100.00")


def test_bad_kind_and_fmt_list_valid_values(resnet18_info) -> None:
    _, _, info = resnet18_info
    with pytest.raises(ValueError, match=r"kind must be one of \('text', 'csv', 'md'\), got 'html'"):
        info.summary(kind="html")
    with pytest.raises(ValueError, match=r"fmt must be one of \('raw', 'clever', 'ratio'\), got 'si'"):
        info.summary(fmt="si")


def test_clever_format() -> None:
    assert clever_format([1_824_034_280, 11_689_512], "%.3f") == ("1.824G", "11.690M")
    assert clever_format(2_500_000_000_000, "%.1f") == "2.5T"
    assert clever_format(1_500, "%.1f") == "1.5K"
    assert clever_format(999, "%.0f") == "999"
    assert clever_format(1_000) == "  1.00K"  # default "%6.2f"


class Attention(nn.Module):
    """Functional matmuls inside a module that also has leaf children."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj(attn @ v)


def test_functional_macs_go_to_the_module_that_runs_them() -> None:
    model = nn.Sequential(Attention())
    macs, params, info = profile(model, torch.randn(2, 5, 8), verbose=False)
    rows = {layer.path: layer for layer in info.layers}
    assert rows["0.qkv"].macs == 2 * 5 * 24 * 8 + 2 * 5 * 24  # 1,920 + 240 bias = 2,160
    assert rows["0"].macs == 2 * 5 * 5 * 8 + 2 * 5 * 8 * 5  # q @ k^T 400 + attn @ v 400
    assert rows["0"].params == 0 and rows["0.qkv"].params == 8 * 24 + 24
    assert rows["0"].input_shape == (2, 5, 8) and rows["0"].output_shape == (2, 5, 8)
    assert macs == 2_160 + 800 + (2 * 5 * 8 * 8 + 2 * 5 * 8)
    assert params == 216 + 72


def test_module_called_twice_and_shared_parameters() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.tied = nn.Linear(4, 4)
            self.tied.weight = self.fc.weight  # tied: counted once

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.tied(self.fc(self.fc(x)))

    macs, params, info = profile(Twice(), torch.randn(3, 4), verbose=False)
    rows = {layer.path: layer for layer in info.layers}
    assert rows["fc"].macs == 2 * (3 * 4 * 4 + 3 * 4)  # two calls of 60
    assert rows["fc"].params == 16 + 4 and rows["tied"].params == 4  # the shared weight once
    assert (macs, params) == (180, 24)


def test_tuple_and_keyword_inputs() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2, bias=False)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.fc(a) + self.fc(b)

    a, b = torch.randn(1, 3), torch.randn(1, 3)
    assert profile(Pair(), (a, b), verbose=False)[0] == 12
    assert profile(Pair(), a, verbose=False, b=b)[0] == 12


def test_custom_ops_beat_builtin_rules() -> None:
    def linear_macs(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> int:
        return output.numel() * module.in_features  # no bias term

    macs, _, info = profile(SimpleModel(), torch.randn(2, 5), custom_ops={nn.Linear: linear_macs}, verbose=False)
    assert macs == 2 * 4 * 5  # 40, not 48


def test_thop_style_counter_adding_to_total_ops() -> None:
    def count_linear(module: nn.Module, x: tuple, y: torch.Tensor) -> None:
        module.total_ops += torch.DoubleTensor([int(y.numel() * 7)])

    model = SimpleModel()
    macs, _, _ = profile(model, torch.randn(1, 5), custom_ops={nn.Linear: count_linear}, verbose=False)
    assert macs == 4 * 7
    assert not hasattr(model.layer, "total_ops")  # nothing left behind


def test_custom_counter_returning_garbage_is_named() -> None:
    def bad(module: nn.Module, inputs: tuple, output: torch.Tensor) -> str:
        return "many"

    with pytest.raises(CostRuleError, match="node 'layer' .*custom counter 'bad' for Linear returned 'many'"):
        profile(SimpleModel(), torch.randn(1, 5), custom_ops={nn.Linear: bad}, verbose=False)


def test_custom_counter_that_raises_names_node_and_module() -> None:
    def boom(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
        raise ValueError("boom")

    with pytest.raises(CostRuleError, match=r"custom counter failed on node 'layer' \(call_module layer in module 'layer' \(Linear\)\) with input shapes \[\[1, 5\]\]: ValueError: boom"):
        profile(SimpleModel(), torch.randn(1, 5), custom_ops={nn.Linear: boom}, verbose=False)


class Gate(nn.Module):
    """A user-defined layer (FX would trace into it) with an op no rule knows."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.proj(x), -1)


def test_custom_ops_on_a_user_class_keep_it_whole(capsys: pytest.CaptureFixture[str]) -> None:
    model = nn.Sequential(Gate(), nn.ReLU())
    macs, params, info = profile(model, torch.randn(2, 4), custom_ops={Gate: lambda m, x, y: 1_000})
    rows = {layer.path: layer for layer in info.layers}
    assert rows["0"].macs == 1_000 and rows["0"].params == 20 and rows["0"].unsupported == ()
    assert (macs, params) == (1_000, 20)
    assert capsys.readouterr().out == ""  # custom-counted: nothing to report


def test_existing_total_ops_buffer_is_restored() -> None:
    def count(module: nn.Module, x: tuple, y: torch.Tensor) -> None:
        module.total_ops += 3

    model = SimpleModel()
    model.layer.register_buffer("total_ops", torch.full((1,), 7.0))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert profile(model, torch.randn(1, 5), custom_ops={nn.Linear: count}, verbose=False)[0] == 3
    assert [name for name, _ in model.named_buffers()] == ["layer.total_ops"]
    assert model.state_dict().keys() == state.keys() and torch.equal(model.layer.total_ops, state["layer.total_ops"])


def test_verbose_reports_layers_without_rules(capsys: pytest.CaptureFixture[str]) -> None:
    class Inverse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.matrix_exp(self.fc(x))

    profile(Inverse(), torch.randn(2, 2), verbose=False)
    assert capsys.readouterr().out == ""
    profile(Inverse(), torch.randn(2, 2))
    expected = "[torch_flops] no rule for torch.linalg.matrix_exp [aten.linalg_matrix_exp]: not counted in (root)\n"
    assert capsys.readouterr().out == expected
