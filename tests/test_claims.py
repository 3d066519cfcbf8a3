"""Each claim check, on synthetic stored results, where it must pass and where it must fail."""

from synthetic import result

from e2elab.claims import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    at_chance,
    beats_by_ratio,
    breakdown,
    ratio_grows_with_knob,
    reaches_threshold,
    seeds_learn,
)

SEEDS = (0, 1, 2)


def test_reaches_threshold_passes_when_every_cell_mean_reaches_it():
    runs = [result("modular", n, s, 0.9 + 0.01 * s, 20_000) for n in (1, 2, 3) for s in SEEDS]
    verdict = reaches_threshold(runs, ["modular"])
    assert verdict.verdict == PASS, verdict.details


def test_reaches_threshold_fails_and_names_the_cell_below():
    runs = [
        result("modular", n, s, 0.9 if n < 3 else 0.6, 20_000) for n in (1, 2, 3) for s in SEEDS
    ]
    verdict = reaches_threshold(runs, ["modular"])
    assert verdict.verdict == FAIL
    assert "n=3" in verdict.details and "0.600" in verdict.details


def test_reaches_threshold_counts_diverged_runs_as_failures():
    runs = [result("modular", 1, s, 0.95, 10_000) for s in SEEDS]
    runs += [result("modular", 1, 3, 0.95, 10_000, status="diverged")]
    assert reaches_threshold(runs, ["modular"]).verdict == FAIL


def test_reaches_threshold_patterns_and_no_data():
    runs = [result("frozen_others:module=adder_1", 1, s, 0.95, 1) for s in SEEDS]
    assert reaches_threshold(runs, "frozen_others:*").verdict == PASS
    assert reaches_threshold(runs, "modular").verdict == INCONCLUSIVE


def test_at_chance_passes_only_if_every_run_is_at_chance():
    broken = [result("e2e", 4, s, 0.1, None) for s in SEEDS]
    assert at_chance(broken, "e2e").verdict == PASS
    mixed = [*broken, result("e2e", 4, 3, 0.7, None)]
    assert at_chance(mixed, "e2e").verdict == FAIL


def test_at_chance_with_a_pattern_names_each_strategy():
    runs = [result("blackbox:model=svm", 4, s, 0.1, None) for s in SEEDS]
    runs += [result("blackbox:model=random_forest", 4, s, 0.1, None) for s in SEEDS]
    verdict = at_chance(runs, "blackbox:*")
    assert verdict.verdict == PASS
    assert "blackbox:model=random_forest @" in verdict.details
    assert "blackbox:model=svm @" in verdict.details
    runs.append(result("blackbox:model=svm", 4, 9, 0.9, 1000))
    assert at_chance(runs, "blackbox:*").verdict == FAIL


def _e2e_sweep(accuracy_by_n, gains=0.0):
    runs = []
    for n, acc in accuracy_by_n.items():
        for s in SEEDS:
            r = result("e2e", n, s, acc, 30_000 if acc > 0.8 else None)
            r.probes = {p: 0.5 + gains for p in r.probes}
            runs.append(r)
    return runs


def test_breakdown_passes_and_reports_the_point_with_an_interval():
    runs = _e2e_sweep({1: 0.95, 2: 0.9, 3: 0.1, 4: 0.1})
    verdict = breakdown(runs, "e2e", "n")
    assert verdict.verdict == PASS, verdict.details
    assert verdict.numbers["breakdown"] == 3
    assert verdict.numbers["per_seed"] == [3, 3, 3]
    assert "n >= 3" in verdict.details


def test_breakdown_fails_when_end_to_end_never_settles_at_chance():
    runs = _e2e_sweep({1: 0.95, 2: 0.9, 3: 0.1, 4: 0.85})
    assert breakdown(runs, "e2e", "n").verdict == FAIL


def test_breakdown_fails_when_a_module_learned_although_the_output_is_at_chance():
    runs = _e2e_sweep({1: 0.95, 2: 0.1, 3: 0.1}, gains=0.3)
    verdict = breakdown(runs, "e2e", "n", min_probe_gain=0.1)
    assert verdict.verdict == FAIL
    assert "recognizer" in verdict.details


def _ratio_runs(e2e_ett, modular_ett):
    runs = []
    for n in e2e_ett:
        for s in SEEDS:
            runs.append(result("e2e", n, s, 0.9, e2e_ett[n]))
            runs.append(result("modular", n, s, 0.9, modular_ett[n]))
    return runs


def test_ratio_grows_with_knob_passes_when_the_ratio_rises_and_stays_above_one():
    runs = _ratio_runs({1: 20_000, 2: 50_000, 3: None}, {1: 10_000, 2: 12_000, 3: 15_000})
    verdict = ratio_grows_with_knob(runs, "e2e", ["modular"], "n")
    assert verdict.verdict == PASS, verdict.details
    assert "never" in verdict.details


def test_ratio_grows_with_knob_fails_when_end_to_end_is_faster_somewhere():
    runs = _ratio_runs({1: 5_000, 2: 50_000, 3: None}, {1: 10_000, 2: 12_000, 3: 15_000})
    verdict = ratio_grows_with_knob(runs, "e2e", ["modular"], "n")
    assert verdict.verdict == FAIL
    assert "ratio <= 1" in verdict.details


def test_ratio_grows_with_knob_fails_when_the_ratio_falls():
    runs = _ratio_runs({1: 40_000, 2: 30_000, 3: 30_000}, {1: 10_000, 2: 10_000, 3: 10_000})
    assert ratio_grows_with_knob(runs, "e2e", ["modular"], "n").verdict == FAIL


def test_beats_by_ratio():
    runs = _ratio_runs({1: 40_000, 2: 30_000}, {1: 10_000, 2: 10_000})
    assert beats_by_ratio(runs, "e2e", ["modular"], min_ratio=2.0).verdict == PASS
    assert beats_by_ratio(runs, "e2e", ["modular"], min_ratio=3.5).verdict == FAIL


def test_ratio_cells_where_neither_side_reached_are_left_out_and_named():
    runs = _ratio_runs({1: 20_000, 2: 50_000, 3: None}, {1: 10_000, 2: 12_000, 3: None})
    verdict = ratio_grows_with_knob(runs, "e2e", ["modular"], "n")
    assert verdict.verdict == PASS, verdict.details
    assert "undetermined at n = 3" in verdict.details
    only_one = _ratio_runs({1: 20_000, 2: None}, {1: 10_000, 2: None})
    assert ratio_grows_with_knob(only_one, "e2e", ["modular"], "n").verdict == INCONCLUSIVE


def _snr(strategy, k, log10_value, resolved=True):
    from e2elab.diagnostics.snr import SNRResult

    value = 10.0**log10_value
    return SNRResult(
        "line-parity",
        {"k": k},
        strategy,
        "p",
        200,
        10,
        {"scorer": [value, value]},
        {"scorer": [True, resolved]},
    )


def test_snr_contrast_passes_when_e2e_falls_and_hinted_stays_flat():
    from e2elab.claims import snr_contrast

    snr = [_snr("e2e", k, -1 - 2 * k) for k in (1, 2, 3)] + [
        _snr("hinted", k, -1) for k in (1, 2, 3)
    ]
    verdict = snr_contrast([], snr, module="scorer", knob="k", min_drop=2.0)
    assert verdict.verdict == PASS, verdict.details
    assert "below float32 eps at k = 3" in verdict.details


def test_snr_contrast_fails_when_both_fall_or_lacks_data():
    from e2elab.claims import snr_contrast

    snr = [_snr(s, k, -1 - 2 * k) for s in ("e2e", "hinted") for k in (1, 2, 3)]
    assert snr_contrast([], snr, module="scorer", knob="k").verdict == FAIL
    assert snr_contrast([], snr[:1], module="scorer", knob="k").verdict == INCONCLUSIVE


def test_snr_contrast_takes_a_bound_only_at_the_low_end_of_a_drop():
    from e2elab.claims import snr_contrast

    flat = [_snr("hinted", k, -1) for k in (1, 2, 3)]
    # e2e below resolution at k = 3: its true SNR is lower still, so the drop stands
    low_end = [_snr("e2e", 1, -1), _snr("e2e", 2, -2), _snr("e2e", 3, -4, resolved=False)]
    verdict = snr_contrast([], low_end + flat, module="scorer", knob="k")
    assert verdict.verdict == PASS, verdict.details
    assert "k=3: <= -4.00" in verdict.details and "drop >= 3.00" in verdict.details
    # a bound at the start of the drop decides nothing
    start = [_snr("e2e", 1, -1, resolved=False), _snr("e2e", 2, -3), _snr("e2e", 3, -4)]
    verdict = snr_contrast([], start + flat, module="scorer", knob="k")
    assert verdict.verdict == FAIL and "below resolution (e2e at k=1)" in verdict.details
    # nor can a bound show that the other strategy stays flat
    unflat = [*flat[:2], _snr("hinted", 3, -1.5, resolved=False)]
    verdict = snr_contrast([], low_end + unflat, module="scorer", knob="k")
    assert verdict.verdict == FAIL and "hinted at k=3" in verdict.details


def test_examples_grow_with_knob():
    from e2elab.claims import examples_grow_with_knob

    slowing = [
        result("e2e", n, s, 0.9, ett) for n, ett in ((1, 1000), (2, 5000), (3, None)) for s in SEEDS
    ]
    verdict = examples_grow_with_knob(slowing, "e2e", "n")
    assert verdict.verdict == PASS, verdict.details
    assert "n=3: never (0/3 reached)" in verdict.details
    speeding = [result("e2e", n, s, 0.9, ett) for n, ett in ((1, 5000), (2, 1000)) for s in SEEDS]
    assert examples_grow_with_knob(speeding, "e2e", "n").verdict == FAIL


def test_seeds_learn_names_the_seeds_that_learned_with_an_interval():
    # near the edge: 3 of 10 seeds learn (accuracy 0.9), 7 stay at chance (0.1)
    runs = [result("e2e", 2, s, 0.9 if s in (1, 4, 8) else 0.1, None) for s in range(10)]
    verdict = seeds_learn(runs, "e2e")
    assert verdict.verdict == PASS, verdict.details
    assert "3/10 seeds learned" in verdict.details and "seeds 1, 4, 8" in verdict.details
    (cell,) = verdict.numbers.values()
    low, high = cell["interval"]
    assert 0.06 < low < 0.07 and 0.65 < high < 0.66  # Clopper-Pearson for 3 of 10


def test_seeds_learn_fails_when_no_seed_learns_or_too_few_do():
    at_chance_only = [result("e2e", 2, s, 0.1, None) for s in range(10)]
    verdict = seeds_learn(at_chance_only, "e2e")
    assert verdict.verdict == FAIL and "0/10 seeds learned" in verdict.details
    some = [result("e2e", 2, s, 0.9 if s < 3 else 0.1, None) for s in range(10)]
    assert seeds_learn(some, "e2e", min_fraction=0.5).verdict == FAIL
    assert seeds_learn(some, "modular").verdict == INCONCLUSIVE


def test_claims_never_pass_on_runs_that_did_not_finish():
    diverged = [result("e2e", n, s, 0.1, None, status="diverged") for n in (1, 2, 3) for s in SEEDS]
    assert breakdown(diverged, knob="n").verdict == INCONCLUSIVE
    assert at_chance(diverged, "e2e").verdict == INCONCLUSIVE
    assert seeds_learn(diverged, "e2e").verdict == INCONCLUSIVE
    verdict = at_chance(diverged, "e2e")
    assert "(3 diverged)" in verdict.details
    # finished runs at chance plus diverged ones: judged on the finished runs only
    mixed = [result("e2e", 3, s, 0.1, None) for s in SEEDS] + [
        result("e2e", 3, 9, 0.1, None, status="diverged")
    ]
    assert at_chance(mixed, "e2e").verdict == PASS
    assert "3/3 at chance" in at_chance(mixed, "e2e").details
    fast = [result("modular", 3, s, 0.9, 1000) for s in SEEDS]
    assert beats_by_ratio(diverged + fast, "e2e", ["modular"]).verdict == INCONCLUSIVE
