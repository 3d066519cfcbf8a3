import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # small models: one thread is faster and keeps runs reproducible across machines
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
