"""The fast softmax helpers give torch's values and gradients, also under vmap."""

import pytest
import torch
from torch.func import vmap

from e2elab.ops import log_softmax, softmax

SHAPES = [(64, 10), (8, 3, 11), (5, 2), (32, 100)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "ours, theirs", [(softmax, torch.softmax), (log_softmax, torch.log_softmax)]
)
def test_values_and_gradients_match_torch(shape, ours, theirs):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weights = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    mine = ours(x)
    (grad_mine,) = torch.autograd.grad((mine * weights).sum(), x)
    reference = theirs(x, -1)
    (grad_reference,) = torch.autograd.grad((reference * weights).sum(), x)
    assert torch.allclose(mine, reference, atol=1e-6)
    assert torch.allclose(grad_mine, grad_reference, atol=1e-6)


def test_under_vmap():
    x = torch.randn(4, 16, 10)
    assert torch.allclose(vmap(softmax)(x), x.softmax(-1), atol=1e-6)
    assert torch.allclose(vmap(log_softmax)(x), x.log_softmax(-1), atol=1e-6)
