"""Port kinds as objects: the sequence kind, loss weights, and a kind a user adds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import e2elab
from e2elab.errors import E2ELabError
from e2elab.execution import first_batch
from e2elab.objective import phase_loss
from e2elab.ports import KINDS, PortKind, RegressionKind, SequenceKind, port_kind
from e2elab.strategy import build
from e2elab.system import trace
from e2elab.task import PortSpec
from e2elab.tasks import make_task

PAD = 9


def test_sequence_loss_and_metrics_skip_padding():
    kind = SequenceKind(pad=PAD)
    target = torch.tensor([[1, 2, PAD], [3, PAD, PAD]])  # (B=2, T=3)
    right = F.one_hot(torch.tensor([[1, 2, 0], [3, 0, 0]]), 10).float() * 20  # (2, 3, 10)
    scores = kind.metrics(right, target)
    assert scores == {"": 1.0, "exact": 1.0}  # the pad positions are not scored
    wrong = right.clone()
    wrong[0, 1] = F.one_hot(torch.tensor(5), 10).float() * 20  # one of 3 real tokens wrong
    scores = kind.metrics(wrong, target)
    assert scores[""] == pytest.approx(2 / 3) and scores["exact"] == 0.5
    # the loss ignores pad positions: changing a pad position's logits changes nothing
    noisy = right.clone()
    noisy[1, 2] = torch.randn(10)
    assert kind.loss(noisy, target, 10) == kind.loss(right, target, 10)
    assert kind.chance_level(0.0, target) == pytest.approx(1 / 3)  # tokens 1, 2, 3: once each


def test_sequence_targets_are_checked():
    kind = SequenceKind(pad=PAD)
    value = torch.zeros(2, 3, 10)
    with pytest.raises(E2ELabError, match=r"token id must lie in 0\.\.9"):
        kind.check_target("tokens", torch.tensor([[1, 2, 12], [0, 0, 0]]), value, 10)
    with pytest.raises(E2ELabError, match=r"needs values shaped \(B, T, 10\)"):
        kind.check_target("tokens", torch.tensor([1, 2]), value, 10)


def test_sequence_copy_learns_its_sequence_port_beyond_chance():
    result = e2elab.run("sequence-copy", "hinted", knobs={"n": 2}, budget=12_000)
    assert result.status == "ok"
    assert {"tokens", "tokens:exact", "digits"} <= set(result.final)
    assert result.metric_names["tokens"] == "token accuracy"
    assert result.final["tokens"] > result.chance["tokens"] + 0.2
    assert not result.at_chance
    assert result.probes["tokens"] > 0  # probed per real token


def test_a_port_weight_scales_its_loss_in_every_strategy():
    task = make_task("digit-chain", {"n": 1})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    batch = task.sample(32, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    system = task.build_system()
    losses = {}
    declared = dict(task.ports)
    for weight in (1.0, 0.25):
        # digit-chain's ports is a cached_property: the instance's own value stands in
        task.__dict__["ports"] = declared | {"digit_1": PortSpec("class", 10, 0.1, weight=weight)}
        phase = build("modular", graph, task.output).phases[0]  # the recognizer's phase
        losses[weight] = phase_loss(task, system, nn.ModuleDict(), graph, phase, batch)
    assert losses[0.25].item() == pytest.approx(0.25 * losses[1.0].item(), rel=1e-5)


def test_port_specs_take_kinds_by_name_or_as_objects_and_check_their_fields():
    assert PortSpec("class", 3, 1 / 3).port_kind == port_kind("class")
    assert isinstance(PortSpec(SequenceKind(pad=0), 5, 0.2).port_kind, SequenceKind)
    assert set(KINDS) == {"class", "binary", "regression", "reward", "sequence", "ctc"}
    with pytest.raises(E2ELabError, match="unknown port kind 'clas'"):
        PortSpec("clas", 3, 0.3)
    with pytest.raises(E2ELabError, match="weight must be zero or more"):
        PortSpec("class", 3, 0.3, weight=-1)


class _AbsoluteError(RegressionKind):
    """A kind a user adds: regression scored by mean absolute error."""

    name = "absolute"
    metric_name = "-MAE"

    def loss(self, value, target, size):
        return (value - target).abs().mean()

    def metrics(self, value, target):
        return {"": -(value - target).abs().mean().item()}


def test_a_kind_the_user_adds_trains_without_changes_to_e2elab():
    from user_tasks.fusion import Fusion

    class AbsoluteFusion(Fusion):
        name = "absolute-fusion"

        @property
        def ports(self):
            return {**super().ports, "distance": PortSpec(_AbsoluteError(), 1, 0.0)}

    result = e2elab.run(AbsoluteFusion(), "hinted", budget=1500)
    assert result.status == "ok"
    assert result.metric_names["distance"] == "-MAE"
    assert result.final["distance"] < 0
    assert isinstance(PortKind, type)
