"""How stable each verdict is under the seeds: leave-one-seed-out and bootstrap
resamples, a fragile mark below 80%, and the margin to the claim's threshold."""

from __future__ import annotations

from types import SimpleNamespace

from synthetic import cell_result

from e2elab.claims import evaluate
from e2elab.stability import BOOTSTRAP, resamples


def _run(strategy: str, seed: int, metric: float):
    return cell_result(strategy, seed, metric, 100 if metric >= 0.8 else None, knobs={"n": 1})


def _claim(threshold: float = 0.8) -> SimpleNamespace:
    params = {"strategies": "e2e", "threshold": threshold}
    return SimpleNamespace(id="T", check="reaches_threshold", statement="s", params=params)


def test_a_verdict_that_hangs_on_one_seed_is_fragile():
    # mean 0.81 passes; leave out seed 0 (0.95) and the mean falls to 0.74: a FAIL
    runs = [_run("e2e", 0, 0.95), _run("e2e", 1, 0.74), _run("e2e", 2, 0.74)]
    (verdict,) = evaluate([_claim()], runs)
    assert verdict.verdict == "PASS"
    assert verdict.resamples == 3 and abs(verdict.stable - 2 / 3) < 1e-9
    assert verdict.fragile and verdict.stability_text() == "stable 67%: fragile"


def test_a_verdict_every_seed_gives_is_stable_at_100_percent():
    runs = [_run("e2e", s, 0.9 + 0.01 * s) for s in range(3)]
    (verdict,) = evaluate([_claim()], runs)
    assert verdict.verdict == "PASS" and verdict.stable == 1.0 and not verdict.fragile
    assert verdict.stability_text() == "stable 100%"


def test_five_seeds_add_bootstrap_resamples():
    runs = [_run("e2e", s, 0.9) for s in range(5)]
    sets = resamples(runs)
    assert len(sets) == 5 + BOOTSTRAP
    assert all(len({r.spec.seed for r in s}) == 4 for s in sets[:5])  # leave one out
    (verdict,) = evaluate([_claim()], runs)
    assert verdict.resamples == 5 + BOOTSTRAP and verdict.stable == 1.0


def test_one_seed_has_no_resample_and_says_so():
    (verdict,) = evaluate([_claim()], [_run("e2e", 0, 0.9)])
    assert verdict.stable is None and verdict.resamples == 0 and not verdict.fragile


def test_the_report_counts_fragile_verdicts_on_its_first_line(tmp_path):
    from e2elab.report.page import write_report

    runs = [_run("e2e", 0, 0.95), _run("e2e", 1, 0.74), _run("e2e", 2, 0.74)]
    (verdict,) = evaluate([_claim()], runs)
    path = write_report(tmp_path, "t", [verdict.as_row()], [], None, [], [], {})
    text = path.read_text()
    assert "1 PASS; 1 fragile" in text and "stable 67%: fragile" in text
    assert "1 fragile" in (tmp_path / "report.html").read_text()


def test_margins_say_how_far_a_verdict_is_from_its_bound():
    runs = [_run("e2e", s, m) for s, m in enumerate((0.95, 0.74, 0.74))]
    (verdict,) = evaluate([_claim()], runs)
    assert verdict.margin == "lowest cell mean 0.810 against 0.8"
    (higher,) = evaluate([_claim(threshold=0.9)], runs)
    assert higher.verdict == "FAIL" and higher.margin == "lowest cell mean 0.810 against 0.9"


def test_a_claim_the_profile_cannot_decide_says_so_beside_its_verdict(tmp_path):
    from e2elab.report.page import write_report

    runs = [_run("e2e", 0, 0.95), _run("e2e", 1, 0.74)]
    why = "2 seeds and a mean within 0.1 of the bound"
    (verdict,) = evaluate([_claim()], runs, undecided={"T": why})
    assert verdict.verdict == "PASS" and verdict.undecided == why  # still computed
    assert verdict.details.startswith(f"this profile cannot decide it: {why}.")
    assert verdict.stability_text() == "stable 50%: fragile; undecided by this profile"
    text = write_report(tmp_path, "t", [verdict.as_row()], [], None, [], [], {}).read_text()
    assert "1 fragile (stable in under 80% of the seed resamples); 1 undecided" in text
    (plain,) = evaluate([_claim()], runs)
    assert plain.undecided is None and "cannot decide" not in plain.details


def test_undecided_must_name_a_claim_of_the_experiment():
    import pytest

    from e2elab.errors import E2ELabError
    from e2elab.experiment import parse

    definition = {
        "name": "x",
        "task": "digit-chain",
        "strategies": ["e2e"],
        "claims": [
            {
                "id": "A",
                "check": "reaches_threshold",
                "statement": "s",
                "params": {"strategies": "e2e"},
            }
        ],
    }
    parse({**definition, "undecided": {"A": "too few seeds"}}, "x.yaml")
    with pytest.raises(E2ELabError, match=r"undecided.*'B' is not the id of a claim"):
        parse({**definition, "undecided": {"B": "too few seeds"}}, "x.yaml")


def test_a_check_over_snr_measurements_is_not_called_stable():
    claim = SimpleNamespace(
        id="S",
        check="snr_below_resolution",
        statement="s",
        params={"falling": "e2e", "flat": "hinted", "module": "m"},
    )
    runs = [_run("e2e", s, 0.9) for s in range(3)]
    (verdict,) = evaluate([claim], runs, snr=[])
    assert verdict.resamples == 0 and verdict.stable is None  # the seeds do not enter it
    assert verdict.stability_text() == "-"
