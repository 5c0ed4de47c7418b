import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    torch.manual_seed(0)


@pytest.fixture
def cuda_device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors, restored after it: an OpenMP or oneDNN wake-up
    per op (up to 0.2 s per ``mkldnn_rnn_layer`` call on a loaded 2-core machine, 0.25 ms with one
    thread) would dominate the run time. Counts do not depend on threads. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
