"""Training keeps a task's fixed pool of training data on its device (``Task.data_on``):
moved once, gathered there, and the same examples as on the host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2elab.tasks import make_task
from e2elab.tasks.pentomino import unpack, unpack_tensor

POOLED = {
    "digit-chain": {"n": 3},
    "digit-compare": {},
    "pentomino": {"train_size": 200, "test_size": 100},
    "images": {"train_size": 100},
    "images-mlp": {"train_size": 100, "front": "mlp", "features": "hog"},
}


def _make(name):
    return make_task(name.removesuffix("-mlp"), POOLED[name])


def _equal(a, b) -> None:
    assert a.x.keys() == b.x.keys() and a.targets.keys() == b.targets.keys()
    for k in a.x:
        assert a.x[k].dtype == b.x[k].dtype
        assert torch.equal(a.x[k], b.x[k]), k
    for k in a.targets:
        assert a.targets[k].dtype == b.targets[k].dtype
        assert torch.equal(a.targets[k], b.targets[k]), k


@pytest.mark.parametrize("name", list(POOLED))
def test_sampling_on_the_data_device_draws_the_same_examples(name):
    task = _make(name)
    host = task.sample(32, torch.Generator().manual_seed(5))
    with task.data_on("cpu"):
        placed = task.sample(32, torch.Generator().manual_seed(5))
    _equal(host, placed)
    assert task.data_device is None  # restored after the block
    if name in ("digit-chain", "digit-compare"):
        gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
        host = task.sample_seeds(16, gens)
        with task.data_on("cpu"):
            gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
            _equal(host, task.sample_seeds(16, gens))


@pytest.mark.parametrize("name", list(POOLED))
def test_the_pool_moves_to_the_data_device_once(name):
    # the meta device stands in for an accelerator: tensors with shapes and no values
    task = _make(name)
    host = task.sample(8, torch.Generator().manual_seed(0))
    moved: list[torch.Tensor] = []
    original = torch.Tensor.to

    def counting_to(tensor, *args, **kwargs):
        out = original(tensor, *args, **kwargs)
        if out.device.type == "meta" and tensor.device.type == "cpu" and tensor.numel() > 64:
            moved.append(tensor)
        return out

    with task.data_on("meta"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, "to", counting_to)
        first = task.sample(8, torch.Generator().manual_seed(0))
        count = len(moved)
        second = task.sample(8, torch.Generator().manual_seed(1))
    assert count >= 1 and len(moved) == count  # the pool moved on the first batch only
    for batch in (first, second):
        for key, value in {**batch.x, **batch.targets}.items():
            assert value.device.type == "meta", key
            reference = host.x.get(key, host.targets.get(key))
            assert value.shape == reference.shape and value.dtype == reference.dtype, key


def test_unpacking_in_torch_matches_numpy():
    packed = np.random.default_rng(0).integers(0, 256, (5, 512), dtype=np.uint8)
    expected = torch.from_numpy(unpack(packed)).float()
    assert torch.equal(unpack_tensor(torch.from_numpy(packed)), expected)


def test_training_on_the_cpu_samples_on_the_host_path(monkeypatch):
    from e2elab import strategy as strategies
    from e2elab import trace
    from e2elab.execution import first_batch
    from e2elab.records import Settings
    from e2elab.train import train_seeds

    task = make_task("digit-chain", {"n": 2})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    seen: list[object] = []
    sample_seeds = task.sample_seeds

    def spy(size, generators):
        seen.append(task.data_device)
        return sample_seeds(size, generators)

    monkeypatch.setattr(task, "sample_seeds", spy)
    settings = Settings(budget=256, batch_size=64, evaluations=2)
    outcomes = train_seeds(
        task, strategies.build("e2e", graph, task.output), graph, settings, [0, 1], batch=True
    )
    assert all(o.status == "ok" for o in outcomes)
    # the CPU takes the host path (numpy unpacking, no copies), as before data_on existed
    assert seen and all(d is None for d in seen)


def test_device_copies_live_while_their_source_and_the_block_do():
    import gc

    task = make_task("digit-chain", {"n": 2})
    pool = torch.arange(1000.0)
    with task.data_on("meta"):
        first = task.on_data_device(pool)
        assert first.device.type == "meta"
        assert task.on_data_device(pool) is first  # one copy per source
        for _ in range(5):  # a fresh source each call: its copy goes with it
            task.on_data_device(torch.arange(1000.0))
        gc.collect()
        assert len(task.__dict__["_device_copies"]) == 1
        with task.data_on("meta"):  # nested: the outer block's copies stay
            assert task.on_data_device(pool) is first
        assert task.on_data_device(pool) is first
    assert "_device_copies" not in task.__dict__  # dropped with the outermost block
    assert task.on_data_device(pool) is pool  # no data device: unchanged
