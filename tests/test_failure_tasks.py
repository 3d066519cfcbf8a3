"""The three task families of Shalev-Shwartz, Shamir and Shammah (2017): line-parity,
parity and stocks. Data distributions, targets, train/test disjointness, wiring, runs."""

import math

import pytest
import torch

from e2elab.errors import E2ELabError
from e2elab.execution import at_chance, first_batch, run
from e2elab.system import trace
from e2elab.task import PortSpec
from e2elab.tasks.line_parity import (
    LineParity,
    draw_images,
    draw_segments,
    image_hash,
    rasterise,
)
from e2elab.tasks.parity import Parity
from e2elab.tasks.stocks import Stocks


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- line-parity


def test_segment_parameters_follow_their_distributions():
    s = draw_segments(20_000, _gen())
    assert s.angle.min() >= 0 and s.angle.max() < math.pi
    assert s.length.min() >= 5 and s.length.max() <= 23
    assert s.centre.min() >= 0 and s.centre.max() <= 27
    # uniform: mean in the middle, each quarter of the range holds about a quarter
    assert abs(s.angle.mean().item() - math.pi / 2) < 0.03
    assert abs(s.length.mean().item() - 14) < 0.15
    quarters = torch.histc(s.angle, bins=4, min=0, max=math.pi) / len(s)
    assert torch.allclose(quarters, torch.full((4,), 0.25), atol=0.015)
    assert abs(s.labels.float().mean().item()) < 0.03


def test_images_are_binary_and_pixel_counts_match_the_segments():
    s = draw_segments(3000, _gen(1))
    images = rasterise(s)
    assert images.shape == (3000, 28, 28)
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    counts = images.sum((1, 2))
    assert counts.min() >= 1  # the centre pixel is always inside
    # the rounded points step monotonically by at most one row and one column, so a
    # segment covers at most length * (|cos| + |sin|) + 3 pixels, and a fully visible one
    # at least its longer projection, length * max(|cos|, |sin|)
    cos, sin = s.angle.cos().abs(), s.angle.sin().abs()
    assert (counts <= s.length * (cos + sin) + 3).all()
    half = s.length / 2
    inside = ((s.centre - half[:, None]) >= 0).all(1) & ((s.centre + half[:, None]) <= 27).all(1)
    assert inside.sum() > 100
    longer = s.length * torch.maximum(cos, sin)
    assert (counts[inside] >= longer[inside].floor()).all()


def test_image_orientation_matches_the_label():
    # long segments in the middle, away from the ambiguous horizontal and vertical angles
    s = draw_segments(2000, _gen(2))
    s.centre.fill_(13.5)
    s.length.fill_(20.0)
    away = ((s.angle % (math.pi / 2)) > 0.2) & ((s.angle % (math.pi / 2)) < math.pi / 2 - 0.2)
    images = rasterise(s)[away]
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    weight = images / images.sum((1, 2), keepdim=True)
    mean_r, mean_c = (weight * rows).sum((1, 2)), (weight * cols).sum((1, 2))
    centred_r, centred_c = rows - mean_r[:, None, None], cols - mean_c[:, None, None]
    rising = (weight * centred_c * -centred_r).sum((1, 2)) > 0  # rows grow downwards
    assert torch.equal(torch.where(rising, 1, -1), s.labels[away])


def test_line_parity_targets_are_products_and_balanced():
    task = LineParity(k=3, test_size=100)
    batch = task.sample(4000, _gen(3))
    assert batch.x["images"].shape == (4000, 3, 28, 28)
    assert batch.x["images"].dtype == torch.float32
    labels = torch.stack([batch.targets[f"score_{i}"] for i in (1, 2, 3)], 1)
    assert set(labels.unique().tolist()) == {-1, 1}
    assert torch.equal(batch.targets["parity"], labels.prod(1))
    assert abs(labels.float().mean().item()) < 0.03
    assert abs(batch.targets["parity"].float().mean().item()) < 0.05


def test_line_parity_train_images_never_equal_test_images():
    task = LineParity(k=2, test_size=2000)
    test_hashes = image_hash(task.test_set().x["images"])
    # without rejection, about 1% of fresh images equal some test image
    _, raw = draw_images(20_000, _gen(4))
    assert torch.isin(image_hash(raw), test_hashes).sum() > 20
    train = task.sample(5000, _gen(4)).x["images"]
    assert not torch.isin(image_hash(train), test_hashes).any()
    # and pixel for pixel, on a subset (the hash could in principle hide a match)
    test_rows = {
        tuple(r.nonzero().squeeze(1).tolist()) for r in task.test_set().x["images"].reshape(-1, 784)
    }
    train_rows = {tuple(r.nonzero().squeeze(1).tolist()) for r in train[:1000].reshape(-1, 784)}
    assert not test_rows & train_rows


def test_line_parity_test_set_is_fixed():
    a, b = LineParity(k=2, test_size=100).test_set(), LineParity(k=2, test_size=100).test_set()
    assert torch.equal(a.x["images"], b.x["images"])
    assert torch.equal(a.targets["parity"], b.targets["parity"])


def test_line_parity_ports_trace_to_scorer_and_combiner():
    task = LineParity(k=3, test_size=100)
    graph = trace(task.build_system(), first_batch(task), task.ports)
    assert graph.modules == ("scorer", "combiner")
    assert graph.ports_of("scorer") == ("score_1", "score_2", "score_3")
    assert graph.ports_of("combiner") == ("parity",)


# ---------------------------------------------------------------- parity


def _all_inputs(d: int) -> torch.Tensor:
    codes = torch.arange(2**d)
    return ((codes[:, None] >> torch.arange(d)) & 1).float()


def test_parity_targets_follow_the_hidden_subset():
    task = Parity(d=12, subset_size=5, subset_seed=3, test_size=100)
    v = task.subset
    assert v.sum() == 5 and set(v.unique().tolist()) == {0.0, 1.0}
    batch = task.sample(2000, _gen(5))
    bits = batch.x["bits"]
    assert set(bits.unique().tolist()) == {0.0, 1.0}
    expected = torch.where(bits[:, v.bool()].sum(1) % 2 == 0, 1, -1)
    assert torch.equal(batch.targets["parity"], expected)
    assert abs(batch.targets["parity"].float().mean().item()) < 0.06
    # flipping a bit of the subset flips y; flipping any other bit does not
    inside, outside = int(v.nonzero()[0]), int((v == 0).nonzero()[0])
    for bit, sign in ((inside, -1), (outside, 1)):
        flipped = bits.clone()
        flipped[:, bit] = 1 - flipped[:, bit]
        assert torch.equal(task.target(flipped), sign * batch.targets["parity"])


def test_parity_default_subset_is_random_and_seeded():
    a, b = Parity(d=30).subset, Parity(d=30, subset_seed=1).subset
    assert 0 < a.sum() < 30 and not torch.equal(a, b)
    assert torch.equal(a, Parity(d=30).subset)


def test_parity_input_space_is_partitioned():
    task = Parity(d=10)
    everything = _all_inputs(10)
    is_test = task.is_test_input(everything)
    assert 0.15 < is_test.float().mean().item() < 0.25
    test_inputs = {tuple(r.tolist()) for r in task.test_set().x["bits"]}
    train_inputs = {tuple(r.tolist()) for r in task.sample(5000, _gen(6)).x["bits"]}
    assert test_inputs == {tuple(r.tolist()) for r in everything[is_test]}
    assert not test_inputs & train_inputs
    assert len(train_inputs) > 0.95 * (~is_test).sum().item()


def test_parity_rejects_a_subset_larger_than_d():
    with pytest.raises(E2ELabError, match="subset_size"):
        Parity(d=10, subset_size=11)


# ---------------------------------------------------------------- stocks


def test_stocks_rewards_pay_the_hidden_choice():
    task = Stocks(d=200, k=10, test_size=100)
    batch = task.sample(20_000, _gen(7))
    x, z, y = batch.x["x"], batch.targets["reward"], batch.targets["choice"]
    assert torch.equal(x.sum(1), torch.ones(20_000)) and set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y, task.table[x.argmax(1)])
    assert (z.gather(1, y[:, None]) == 1).all()
    others = z[torch.ones_like(z, dtype=torch.bool).scatter(1, y[:, None], False)]
    assert set(others.unique().tolist()) == {-1.0, 1.0}
    assert abs((others == 1).float().mean().item() - 0.5) < 0.01
    # the table uses every choice
    assert len(task.table.unique()) == 10


def test_stocks_training_pairs_never_equal_test_pairs():
    task = Stocks(d=25, k=5, test_size=100)  # 25 * 16 = 400 pairs, a quarter drawn for test
    test = task.test_set()
    test_pairs = {
        (int(a), tuple(b.tolist()))
        for a, b in zip(test.x["x"].argmax(1), test.targets["reward"], strict=True)
    }
    batch = task.sample(5000, _gen(8))
    train_pairs = {
        (int(a), tuple(b.tolist()))
        for a, b in zip(batch.x["x"].argmax(1), batch.targets["reward"], strict=True)
    }
    assert len(test_pairs) > 70
    assert not train_pairs & test_pairs
    # every input still appears in training
    assert len({a for a, _ in train_pairs}) == 25


def test_stocks_rejects_a_test_set_that_covers_the_pair_space():
    with pytest.raises(E2ELabError, match="quarter"):
        Stocks(d=20, k=4, test_size=100)


def test_stocks_reward_port_has_no_producer():
    task = Stocks(d=50, k=6, test_size=100)
    graph = trace(task.build_system(), first_batch(task), task.ports)
    assert graph.modules == ("policy",)
    assert graph.producer_of("choice") == frozenset({"policy"})
    assert graph.producer_of("reward") == frozenset()
    assert task.ports["reward"].chance == pytest.approx(1 / 6)


# ---------------------------------------------------------------- runs


@pytest.mark.parametrize(
    "task",
    [LineParity(k=1, test_size=100), Parity(d=8, test_size=100), Stocks(d=50, test_size=100)],
    ids=lambda t: t.name,
)
def test_hinted_runs(task):
    result = run(task, "hinted", budget=400, evaluations=2)
    assert result.status == "ok"
    assert set(result.final) == set(task.ports)
    assert result.curve[-1]["examples"] == 400


def test_stocks_learns_the_choice_from_rewards():
    result = run(Stocks(d=100, k=10, test_size=100), "e2e", budget=5000, evaluations=2)
    assert result.final["reward"] > 0.9 and result.final["choice"] > 0.9
    # a reward metric is tested against chance too (it once counted as at chance always)
    assert not result.at_chance and result.at_chance_p_value < 1e-6


def test_stocks_without_training_is_at_chance():
    # one Adam step on 100 of 1000 inputs: the policy has barely moved
    result = run(Stocks(d=1000, k=10, test_size=400), "e2e", budget=100, evaluations=1)
    assert abs(result.final["reward"] - 0.1) < 0.2
    assert result.at_chance and result.at_chance_p_value > 0.01


def test_modular_on_stocks_is_the_decomposition():
    # policy trains on the cross-entropy of `choice` alone; the reward port passes through
    result = run(Stocks(d=100, k=10, test_size=100), "modular", budget=5000, evaluations=2)
    assert [p["label"] for p in result.phases] == ["modular:policy"]
    assert result.final["choice"] > 0.9 and result.final["reward"] > 0.9


# ---------------------------------------------------------------- at chance


def test_at_chance_for_each_kind_of_metric():
    rate = PortSpec("binary", 1, 0.5)
    assert at_chance(rate, 0.52, 0.5, 2000)[0]  # p ~ 0.04
    assert not at_chance(rate, 0.56, 0.5, 2000)[0]
    reward = PortSpec("reward", 10, 0.1)
    # Hoeffding: exp(-n t^2 / 2)
    assert at_chance(reward, 0.15, 0.1, 2000) == (True, pytest.approx(math.exp(-2.5)))
    assert at_chance(reward, 0.05, 0.1, 2000) == (True, 1.0)
    assert not at_chance(reward, 0.2, 0.1, 2000)[0]
    regression = PortSpec("regression", 1, 0.0)
    assert at_chance(regression, -1.0, -0.9, 100) == (True, None)
    assert at_chance(regression, -0.5, -0.9, 100) == (False, None)
    assert at_chance(rate, float("nan"), 0.5, 100) == (True, None)
