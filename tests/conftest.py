import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    torch.manual_seed(0)


@pytest.fixture
def cuda_device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")
