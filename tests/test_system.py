"""Ports: cutting stops gradients, teacher forcing feeds targets, tracing finds producers."""

import torch
from torch import nn

from e2elab import Batch, System, make_task, trace
from e2elab.execution import first_batch
from e2elab.task import PortSpec


class Chain(System):
    def __init__(self):
        super().__init__(first=nn.Linear(4, 3), second=nn.Linear(3, 2))

    def forward(self, batch):
        hidden = self.port("hidden", self.first(batch.x["x"]))
        return self.port("y", self.second(hidden))


def _batch():
    torch.manual_seed(0)
    return Batch(
        {"x": torch.randn(8, 4)},
        {"hidden": torch.randint(0, 3, (8,)), "y": torch.randint(0, 2, (8,))},
    )


def test_cut_port_passes_no_gradient_upstream():
    system, batch = Chain(), _batch()
    ports = system.run_ports(batch, cut=frozenset({"hidden"}))
    ports["y"].sum().backward()
    assert system.first.weight.grad is None
    assert system.second.weight.grad is not None and system.second.weight.grad.abs().sum() > 0


def test_uncut_port_passes_gradient_upstream():
    system, batch = Chain(), _batch()
    system.run_ports(batch)["y"].sum().backward()
    assert system.first.weight.grad is not None and system.first.weight.grad.abs().sum() > 0


def test_cut_port_still_trains_its_own_producer():
    system, batch = Chain(), _batch()
    ports = system.run_ports(batch, cut=frozenset({"hidden"}))
    ports["hidden"].sum().backward()
    assert system.first.weight.grad.abs().sum() > 0


def test_teacher_forcing_feeds_the_target_downstream():
    system, batch = Chain(), _batch()
    spec = PortSpec("class", 3, 1 / 3)
    seen = {}

    def spy(module, inputs, output):
        seen["input"] = inputs[0].detach().clone()

    system.second.register_forward_hook(spy)
    ports = system.run_ports(
        batch, forced=frozenset({"hidden"}), forcer=lambda n, v: spec.forced(batch.targets[n], v)
    )
    # downstream saw the forced target, whose softmax is the one-hot target
    assert torch.equal(seen["input"].argmax(-1), batch.targets["hidden"])
    assert torch.allclose(
        seen["input"].softmax(-1),
        nn.functional.one_hot(batch.targets["hidden"], 3).float(),
        atol=1e-4,
    )
    # the recorded port is still the module's own output, so its loss trains the module
    assert torch.allclose(ports["hidden"], system.first(batch.x["x"]))
    # and no gradient reaches the upstream module through a forced port
    ports["y"].sum().backward()
    assert system.first.weight.grad is None


def test_trace_finds_each_ports_producer_in_flow_order():
    task = make_task("digit-chain", {"n": 3})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    assert graph.modules == ("recognizer", "adder_1", "adder_2", "adder_3")
    assert graph.ports_of("recognizer") == ("digit_1", "digit_2", "digit_3")
    assert graph.ports_of("adder_2") == ("sum_2",)
    assert graph.producer_of("sum_3") == frozenset({"adder_3"})


def test_trace_with_shared_adder():
    task = make_task("digit-chain", {"n": 3, "share_adders": True})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    assert graph.modules == ("recognizer", "adder")
    assert graph.ports_of("adder") == ("sum_1", "sum_2", "sum_3")
