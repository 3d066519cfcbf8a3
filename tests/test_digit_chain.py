"""digit-chain data: real digits, split by image, targets consistent with the images."""

import torch

from e2elab import make_task
from e2elab.data.digits import digit_pools


def test_train_and_test_images_are_disjoint():
    pools = digit_pools()
    train, test = set(pools.train_ids.tolist()), set(pools.test_ids.tolist())
    assert not train & test
    assert len(train) + len(test) == 1797


def _rows(images):
    return {tuple(row.tolist()) for row in images}


def test_batches_draw_only_from_their_own_pool():
    task = make_task("digit-chain", {"n": 4})
    pools = digit_pools()
    train_rows, test_rows = _rows(pools.train_images), _rows(pools.test_images)
    sampled = task.sample(500, torch.Generator().manual_seed(0)).x["images"].reshape(-1, 64)
    held_out = task.test_set().x["images"].reshape(-1, 64)
    assert _rows(sampled) <= train_rows
    assert _rows(held_out) <= test_rows
    # identical pixel rows in both pools would blur the check above; there are few
    assert len(_rows(held_out) - train_rows) > 0.9 * len(_rows(held_out))


def test_targets_are_running_sums_mod_m():
    task = make_task("digit-chain", {"n": 5, "m": 7})
    batch = task.sample(300, torch.Generator().manual_seed(1))
    digits = torch.stack([batch.targets[f"digit_{i}"] for i in range(1, 6)], 1)
    for i in range(1, 6):
        assert torch.equal(batch.targets[f"sum_{i}"], digits[:, :i].sum(1) % 7)
    assert task.output == "sum_5"
    assert batch.x["images"].shape == (300, 5, 64)


def test_test_set_is_fixed_and_sized_by_knob():
    a = make_task("digit-chain", {"n": 2, "test_size": 500}).test_set()
    b = make_task("digit-chain", {"n": 2, "test_size": 500}).test_set()
    assert len(a) == 500 and torch.equal(a.x["images"], b.x["images"])
