"""Gradient signal-to-noise per module, and the diagnose command."""

import json
import math

import pytest
import torch

from e2elab import make_task
from e2elab.cli import main
from e2elab.diagnostics.snr import gradient_snr, snr_estimate


def _gradients(snr, batches, dims=20_000, seed=0):
    """``batches`` noisy gradients whose true SNR is ``snr`` (unit noise per coordinate)."""
    gen = torch.Generator().manual_seed(seed)
    mean = torch.randn(dims, generator=gen)
    mean *= math.sqrt(snr * dims) / mean.norm()
    return mean + torch.randn(batches, dims, generator=gen)


def test_snr_estimate_is_unbiased_below_one_over_batches():
    # The plug-in ||mean g||^2 / var keeps var/B of noise in its signal, so with 10 batches
    # it reads about 0.1 whatever the truth; the pairwise estimate does not.
    for true in (1e-1, 1e-2):
        g = _gradients(true, batches=10)
        estimate = snr_estimate(g)
        assert estimate.resolved
        assert true / 1.5 < estimate.snr < true * 1.5, (true, estimate)
        plug_in = g.mean(0).pow(2).sum() / (g.pow(2).sum(1).mean() - g.mean(0).pow(2).sum())
        assert plug_in > 0.09


def test_snr_below_resolution_is_an_upper_bound():
    g = _gradients(0.0, batches=10)
    estimate = snr_estimate(g)
    assert not estimate.resolved
    assert 0 < estimate.snr < 1e-2  # a bound well below 1/B, and above the truth (0)
    with_more = snr_estimate(_gradients(0.0, batches=40, seed=1))
    assert with_more.snr < estimate.snr  # more batches, tighter bound


def test_noise_along_one_direction_sets_the_resolution():
    # isotropic noise: no direction stands out (each of the B - 1 directions holds ~1/(B-1))
    spread = snr_estimate(_gradients(0.0, batches=40))
    assert spread.noise_top_share < 0.1
    # the same total noise along one direction: the share is ~1 and the bound ~2.8/B,
    # far above the isotropic case's
    gen = torch.Generator().manual_seed(2)
    direction = torch.randn(20_000, generator=gen)
    direction *= math.sqrt(20_000) / direction.norm()
    along = torch.randn(40, 1, generator=gen) * direction
    one = snr_estimate(along)
    assert one.noise_top_share > 0.99
    assert not one.resolved and 0.02 < one.snr < 0.2
    assert one.snr > 20 * spread.snr


def test_snr_estimate_needs_three_gradients():
    import pytest

    with pytest.raises(ValueError, match="at least 3"):
        snr_estimate(torch.zeros(2, 5))


def test_snr_is_signal_over_noise_of_the_module_gradient():
    task = make_task("digit-chain", {"n": 2})
    result = gradient_snr(task, "e2e", inits=2, batches=6, batch_size=32)
    assert set(result.per_init) == {"recognizer", "adder_1", "adder_2"}
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in result.per_init.values())
    assert all(len(v) == 2 for v in result.resolved.values())
    mean, lo, hi = result.log10_summary("recognizer")
    assert lo <= mean <= hi


def test_snr_with_identical_batches_is_infinite():
    # every mini-batch the same -> no noise at all
    task = make_task("digit-chain", {"n": 1})
    fixed = task.sample(16, torch.Generator().manual_seed(0))
    task.sample = lambda size, generator: fixed
    result = gradient_snr(task, "e2e", inits=1, batches=4, batch_size=16)
    assert all(math.isinf(v[0]) or v[0] > 1e6 for v in result.per_init.values())


@pytest.mark.slow
def test_stocks_snr_matches_its_closed_form_far_below_one_over_batches():
    # Cross-entropy on one-hot inputs (d = 1000, batch 100): the gradient's mean has norm^2
    # about 1/d and a batch's noise about 1/batch, so SNR ~ batch/d = 0.1. The old plug-in
    # estimate with 4 batches read 0.1 + 1/4, i.e. log10 -0.45.
    task = make_task("stocks", {"k": 1000})
    decomposed = gradient_snr(task, "modular", inits=2, batches=4)
    assert -1.2 < decomposed.log10_summary("policy")[0] < -0.8
    assert all(decomposed.resolved["policy"])
    # End-to-end, the reward's k - 1 random entries make it about k times noisier
    # (SNR ~ 1e-4): at most a bound well below the decomposition's value.
    end_to_end = gradient_snr(task, "e2e", inits=2, batches=20)
    assert end_to_end.log10_summary("policy")[0] < -2


def test_frozen_modules_are_left_out_of_the_snr():
    task = make_task("digit-chain", {"n": 2})
    result = gradient_snr(task, "frozen_others:module=adder_1", inits=2, batches=4, phase=-1)
    assert set(result.per_init) == {"adder_1"}


@pytest.mark.slow
def test_diagnose_snr_writes_json_and_figure(tmp_path, capsys):
    argv = [
        "diagnose",
        "snr",
        "--sweep",
        "n=1,2",
        "--inits",
        "2",
        "--batches",
        "4",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    data = json.loads((tmp_path / "snr.json").read_text())
    assert {(d["strategy"], d["knobs"]["n"]) for d in data} == {
        ("e2e", 1),
        ("e2e", 2),
        ("hinted", 1),
        ("hinted", 2),
    }
    assert (tmp_path / "snr.png").stat().st_size > 10_000
    assert "log10 gradient SNR" in capsys.readouterr().out


def test_diagnose_snr_errors(capsys):
    assert main(["diagnose", "snr", "--sweep", "n"]) == 2
    assert "--sweep expects NAME=V1,V2" in capsys.readouterr().err
    assert main(["diagnose", "snr", "--sweep", "n=1", "--inits", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
