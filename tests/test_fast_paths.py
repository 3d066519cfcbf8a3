"""The faster implementations give what the plain ones give: the Gram-matrix SVM is
scikit-learn's RBF SVC, trees on sparse pixels make the same splits as on dense ones,
pooling before ReLU is the same network, and channels-last convolutions are applied on
the CPU to every system with a Conv2d (and nowhere else)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.svm import SVC
from torch import nn

from e2elab import baselines
from e2elab.baselines import GramSVC, fit_blackbox
from e2elab.errors import E2ELabError
from e2elab.modules import conv_stages
from e2elab.numerics import conv_layout
from e2elab.tasks import register
from e2elab.tasks.line_parity import scorer
from e2elab.tasks.pentomino import Pentomino

register(Pentomino)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E2ELAB_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_gram_svc_is_sklearns_rbf_svc(C):
    x, y = load_digits(return_X_y=True)
    x_train, y_train, x_test = x[:600], y[:600], x[600:1400]
    plain = SVC(kernel="rbf", gamma="scale", C=C, random_state=0).fit(x_train, y_train)
    gram = GramSVC(C=C, random_state=0).fit(x_train, y_train)
    assert gram.gamma_ == pytest.approx(1 / (x_train.shape[1] * x_train.var()))
    assert np.array_equal(gram.svc_.support_, plain.support_)
    np.testing.assert_allclose(gram.svc_.dual_coef_, plain.dual_coef_, rtol=1e-6, atol=1e-9)
    assert np.array_equal(gram.predict(x_test, chunk=97), plain.predict(x_test))
    assert list(gram.classes_) == list(plain.classes_)


@pytest.mark.parametrize("model", ["decision_tree", "random_forest"])
def test_trees_on_sparse_pixels_match_dense(model, monkeypatch):
    task = Pentomino(train_size=600, test_size=300)
    fast = fit_blackbox(task, model, 600, seed=3)
    monkeypatch.setattr(baselines, "SPARSE_MODELS", frozenset())
    dense = fit_blackbox(task, model, 600, seed=3)
    assert fast["implementation"] == "sparse inputs"
    assert dense["implementation"] == "dense inputs"
    for key in ("train_accuracy", "test_accuracy", "examples_used"):
        assert fast[key] == dense[key], key


def test_dense_inputs_stay_dense_for_trees():
    """Inputs with many non-zero values are not made sparse (no gain, only copies)."""
    from e2elab.tasks.digit_chain import DigitChain

    fit = fit_blackbox(DigitChain(n=2), "decision_tree", 300, seed=0)
    assert fit["implementation"] == "dense inputs"


def test_svm_runs_through_the_gram_matrix(monkeypatch):
    task = Pentomino(train_size=300, test_size=200)
    assert isinstance(baselines.MODELS["svm"][0](0, 1), GramSVC)
    fit = fit_blackbox(task, "svm", 300, seed=0)
    assert fit["implementation"].startswith("SVC on a precomputed RBF Gram matrix")
    plain = (lambda seed, jobs: SVC(kernel="rbf", gamma="scale", random_state=seed), 5000)
    monkeypatch.setitem(baselines.MODELS, "svm", plain)
    again = fit_blackbox(task, "svm", 300, seed=0)
    assert again["implementation"] == "dense inputs"  # says what actually ran
    assert again["test_accuracy"] == fit["test_accuracy"]


def _relu_then_pool() -> nn.Sequential:
    net = scorer()
    order = [0, 2, 1, 3, 5, 4, *range(6, len(net))]  # swap each (pool, relu) pair back
    return nn.Sequential(*[net[i] for i in order])


def test_pooling_before_relu_is_the_same_network():
    torch.manual_seed(0)
    fast = scorer()
    assert isinstance(fast[1], nn.MaxPool2d) and isinstance(fast[2], nn.ReLU)
    assert isinstance(fast[4], nn.MaxPool2d) and isinstance(fast[5], nn.ReLU)
    torch.manual_seed(0)
    plain = _relu_then_pool()
    plain[1].inplace = plain[4].inplace = False  # the reordered ReLUs: relu, then pool
    images = torch.randn(32, 1, 28, 28)
    out_fast, out_plain = fast(images), plain(images)
    assert torch.equal(out_fast, out_plain)
    out_fast.square().sum().backward()
    out_plain.square().sum().backward()
    for (name, a), b in zip(fast.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), name


def test_conv_stages_pool_before_relu():
    kinds = [type(m) for m in conv_stages(3, 4)]
    assert kinds[:3] == [nn.Conv2d, nn.MaxPool2d, nn.ReLU]


def test_conv_layout_is_channels_last_on_cpu_only_with_convolutions():
    net = conv_layout(nn.Sequential(*conv_stages(3, 4)), "cpu")
    weight = net[3].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    out = net[:3](torch.randn(2, 3, 8, 8))
    assert out.is_contiguous(memory_format=torch.channels_last)
    mlp = conv_layout(nn.Sequential(nn.Linear(4, 4)), "cpu")
    assert mlp[0].weight.is_contiguous()
    meta = nn.Sequential(*conv_stages(3, 4)).to("meta")
    assert conv_layout(meta, "meta")[3].weight.is_contiguous()  # only the CPU's layout


def test_a_convnet_run_trains_channels_last(monkeypatch):
    from e2elab import replicas, run

    laid_out = []

    def spy(module, device):
        out = conv_layout(module, device)
        convs = [m for m in out.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1]
        laid_out.append([c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs])
        return out

    monkeypatch.setattr(replicas, "conv_layout", spy)
    result = run("line-parity", "e2e", seed=1, budget=400, knobs={"k": 2, "test_size": 100})
    assert result.status == "ok"
    assert laid_out and all(flags == [True] for flags in laid_out)


def test_the_report_names_each_black_box_implementation(tmp_path):
    from e2elab import run
    from e2elab.report.blackbox import blackbox_rows

    knobs = {"train_size": 300, "test_size": 200}
    runs = [
        run("pentomino", f"blackbox:model={model}", seed=0, budget=300, knobs=knobs)
        for model in ("decision_tree", "svm")
    ]
    runs.append(run("pentomino", "blackbox:model=svm", seed=1, budget=300, knobs=knobs))
    rows = {row["model"]: row for row in blackbox_rows(runs)}
    tree, svm = rows["decision_tree"], rows["svm"]
    assert tree["implementation"] == "sparse inputs" and tree["seeds"] == "1"
    assert svm["implementation"].startswith("SVC on a precomputed RBF Gram matrix")
    assert svm["seeds"] == "2" and svm["examples used"] == "300"
    mean = sum(r.final[r.output] for r in runs[1:]) / 2
    assert svm["test accuracy"] == f"{mean:.3f}"


def test_checkpoints_of_relu_then_pool_convnets_still_load():
    """Saved before the pools came first: the same network, so it loads, exactly."""
    from e2elab import checkpoints

    torch.manual_seed(0)
    old = _relu_then_pool()
    old[1].inplace = old[4].inplace = False  # as the old scorer was built
    data = checkpoints.encode(old, "scorer")
    new = scorer()
    checkpoint = checkpoints.decode(data, "old")
    checkpoints.check_fits(checkpoint, new, "scorer", "old")
    new.load_state_dict(checkpoint.tensors)
    images = torch.randn(4, 1, 28, 28)
    assert torch.equal(new(images), old(images))
    other = nn.Sequential(*[nn.Tanh() if i == 1 else m for i, m in enumerate(old)])
    with pytest.raises(E2ELabError, match="differs in structure"):
        checkpoints.check_fits(checkpoint, other, "scorer", "old")


def test_the_black_box_table_names_the_model_and_its_features():
    from e2elab.report.blackbox import _model

    assert _model("blackbox") == "random_forest"  # the strategy's default model
    assert _model("blackbox:model=svm") == "svm"
    assert _model("blackbox:features=hog,model=logreg") == "logreg + hog"
