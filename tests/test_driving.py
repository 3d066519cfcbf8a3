"""The driving world: the expert keeps its lane, the bicycle's kinematics, the camera's
determinism and geometry, and a short closed-loop run of the task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2elab.data import driving as world


def _drive(roads, policy, steps):
    k = len(roads)
    index = np.full(k, world.BEHIND)
    x = np.array([r.points[world.BEHIND, 0] for r in roads])
    y = np.array([r.points[world.BEHIND, 1] for r in roads])
    theta = np.array([r.heading[world.BEHIND] for r in roads])
    worst = 0.0
    for _ in range(steps):
        index, offset, error = world.locate(roads, index, x, y, theta)
        worst = max(worst, float(np.abs(offset).max()))
        x, y, theta = world.bicycle(x, y, theta, policy(offset, error))
    return worst, index


# up to twice the knob's largest value: the "sharp" condition doubles the curvature
@pytest.mark.parametrize("curvature", [0.0, 0.02, 0.04, 0.06, 0.08])
def test_the_expert_stays_in_its_lane_on_every_test_road(curvature):
    roads = [world.road(world.TEST_SEED + i, curvature, 220.0) for i in range(6)]
    steps = int(200.0 / (world.SPEED * world.DT))
    worst, index = _drive(roads, world.expert, steps)
    assert worst < world.DEPARTURE
    assert (index * world.STEP > 190.0).all()  # it went the whole way


def test_a_constant_steering_angle_drives_a_circle_of_the_kinematic_radius():
    steer = 0.2
    x, y, theta = np.zeros(1), np.zeros(1), np.zeros(1)
    points = []
    for _ in range(400):
        x, y, theta = world.bicycle(x, y, theta, np.array([steer]))
        points.append((x[0], y[0]))
    radius = world.WHEELBASE / np.tan(steer)
    centre = np.array([0.0, radius])  # a left turn from the origin heading +x
    distance = np.hypot(*(np.array(points) - centre).T)
    # each step is integrated as an exact arc: on the circle to rounding, after 400 steps
    # (Euler steps would drift outwards by several centimetres)
    assert np.abs(distance - radius).max() < 1e-6
    assert theta[0] == pytest.approx(400 * world.SPEED * world.DT / radius)


def test_the_closed_loop_is_deterministic_and_counts_a_nan_policy_as_departing():
    from e2elab.tasks.driving import Driving

    knobs = {"frames": 100, "roads": 2, "test_roads": 2, "test_length": 20.0, "test_size": 100}
    task = Driving(**knobs)
    torch.manual_seed(0)
    system = task.build_system()
    once, twice = task.closed_loop(system, "nominal"), task.closed_loop(system, "nominal")
    assert once == twice

    class Broken(torch.nn.Module):  # steers NaN: the car goes nowhere, every step
        def __init__(self) -> None:
            super().__init__()
            self.inner = system

        def parameters(self, recurse: bool = True):
            return self.inner.parameters(recurse)

        def run_ports(self, batch, **kw):
            ports = self.inner.run_ports(batch, **kw)
            return {**ports, "steering": torch.full_like(ports["steering"], float("nan"))}

    broken = task.closed_loop(Broken(), "nominal")
    assert broken["departures_per_km"] > 20 * 1000 / 20.0  # nearly every step departs
    assert broken["distance_to_first_departure"] <= 1.0
    assert broken["roads_without_departure"] == 0.0


def test_expert_states_are_where_the_expert_drives_and_training_poses_surround_them():
    roads = [world.road(i, 0.03, 400.0) for i in range(4)]
    which, index, offset, _error = world.expert_states(roads)
    assert len(which) == len(index) == len(offset) > 1000
    assert np.abs(offset).max() < world.DEPARTURE and np.abs(offset).mean() > 0.05
    exact = world.poses(roads, np.random.default_rng(0), 0.0, 500)
    assert set(np.round(exact[5], 9)) <= set(np.round(offset, 9))  # spread 0: its states
    wide = world.poses(roads, np.random.default_rng(0), 1.0, 500)
    assert 0.4 < (wide[5] - exact[5]).std() < 0.55  # spread 1: sd 0.5 m around them


def test_roads_are_deterministic_and_training_and_test_roads_differ():
    a, b = world.road(3, 0.02), world.road(3, 0.02)
    assert np.array_equal(a.points, b.points)
    assert np.abs(a.curvature).max() == pytest.approx(0.02)
    test = world.road(world.TEST_SEED + 3, 0.02)
    assert not np.allclose(a.points[:50], test.points[:50])


def test_the_camera_is_deterministic_and_draws_the_markings_where_the_geometry_puts_them():
    road = world.road(0, 0.0)  # straight
    index = np.array([40])
    x, y = road.points[40:41, 0].copy(), road.points[40:41, 1].copy()
    theta = road.heading[40:41].copy()
    one = world.render([road], index, x, y, theta, noise=0.0)
    two = world.render([road], index, x, y, theta, noise=0.0)
    assert np.array_equal(one, two)
    image = one[0].transpose(1, 2, 0)
    assert np.allclose(image[: world.HORIZON], world.SKY)
    # on the straight road, centred: the road edges sit where the pinhole geometry puts
    # them, |column - centre| = FOCAL * HALF_WIDTH / forward, and are symmetric
    row = world.IMAGE_H - 1
    forward = world.CAMERA_HEIGHT * world.FOCAL / (row + 0.5 - world.HORIZON)
    expect = world.FOCAL * (world.HALF_WIDTH - 0.15) / forward
    paint = np.flatnonzero(np.abs(image[row] - world.PAINT).sum(-1) < 1e-6)
    columns = np.abs(paint + 0.5 - world.IMAGE_W / 2)
    assert columns.max() == pytest.approx(expect, abs=1.5)
    assert np.allclose(image[row], image[row][::-1], atol=1e-6)  # left-right symmetric
    # a car 1 m left of the centre line sees the left edge 1 m (not 1.85 m) to its left
    shifted = world.render([road], index, x - np.sin(theta), y + np.cos(theta), theta, noise=0.0)
    left = shifted[0].transpose(1, 2, 0)[row]
    painted = np.flatnonzero(np.abs(left - world.PAINT).sum(-1) < 1e-6)
    edge = world.IMAGE_W / 2 - world.FOCAL * (world.HALF_WIDTH - 0.15 - 1.0) / forward
    assert painted.min() + 0.5 == pytest.approx(edge, abs=1.5)


def test_a_short_driving_run_drives_in_closed_loop():
    from e2elab.execution import execute, make_spec

    knobs = {"frames": 256, "roads": 2, "test_roads": 2, "test_length": 20.0, "test_size": 100}
    result = execute(make_spec("driving", "modular", knobs=knobs, budget=640, evaluations=2))
    assert result.status == "ok"
    loop = result.artifacts["closed_loop"]
    assert set(loop) == {
        "nominal",
        "dark",
        "noisy",
        "sharp",
        "port_noise",
        "noisy_x2",
        "sharp_x1.5",
    }
    for metrics in loop.values():
        assert metrics["mean_abs_offset"] >= 0 and metrics["departures_per_km"] >= 0
        assert 0 <= metrics["distance_to_first_departure"] <= 20.0
        assert 0 <= metrics["roads_without_departure"] <= 1
        assert len(metrics["trajectory"]) >= 2


def _loop_runs(values: dict[str, tuple[float, float]], seeds: int = 3):
    """Runs whose artifacts hold closed-loop offsets (nominal, dark) per strategy."""
    import dataclasses

    from synthetic import result

    out = []
    for strategy, (nominal, dark) in values.items():
        for seed in range(seeds):
            r = result(strategy, 1, seed, 0.5, None)
            loop = {
                "nominal": {"mean_abs_offset": nominal + 0.01 * seed},
                "dark": {"mean_abs_offset": dark + 0.01 * seed},
            }
            spec = r.spec.changed(knobs={"frames": 500})
            out.append(dataclasses.replace(r, spec=spec, artifacts={"closed_loop": loop}))
    return out


def test_artifact_claims_read_closed_loop_numbers_paired_by_seed():
    from e2elab.claims import FAIL, PASS, artifact_beats, degrades_less

    runs = _loop_runs({"modular": (0.1, 0.15), "e2e": (0.2, 0.6)})
    metric = "closed_loop.nominal.mean_abs_offset"
    beats = artifact_beats(runs, "modular", "e2e", metric, "frames")
    assert beats.verdict == PASS and "modular 0.110 vs e2e 0.210" in beats.details
    assert artifact_beats(runs, "e2e", "modular", metric, "frames").verdict == FAIL
    less = degrades_less(
        runs, "modular", "e2e", metric, "closed_loop.dark.mean_abs_offset", "frames"
    )
    assert less.verdict == PASS and "modular loses +0.050, e2e +0.400" in less.details
    missing = artifact_beats(runs, "modular", "e2e", "closed_loop.nope.x", "frames")
    assert missing.verdict == "INCONCLUSIVE"


def test_artifact_exceeds_compares_two_numbers_of_one_strategy_by_seed():
    from e2elab.claims import FAIL, INCONCLUSIVE, PASS, artifact_exceeds

    runs = _loop_runs({"modular": (0.1, 0.15), "e2e": (0.2, 0.6)})
    dark, nominal = "closed_loop.dark.mean_abs_offset", "closed_loop.nominal.mean_abs_offset"
    more = artifact_exceeds(runs, "modular", dark, nominal, "frames")
    assert more.verdict == PASS
    assert "modular: closed_loop.dark.mean_abs_offset 0.160 vs" in more.details
    assert "difference 0.050" in more.details
    assert artifact_exceeds(runs, "modular", nominal, dark, "frames").verdict == FAIL
    assert artifact_exceeds(runs, "hinted", dark, nominal, "frames").verdict == INCONCLUSIVE


def test_driving_figures_draw_from_closed_loop_artifacts(tmp_path):
    import dataclasses

    from synthetic import result

    from e2elab.report.driving import driving_figures

    runs = []
    metrics = {
        "mean_abs_offset": 0.1,
        "departures_per_km": 0.0,
        "distance_to_first_departure": 20.0,
        "perception_steer_mae": 0.02,
        "controller_steer_mae": 0.01,
        "perception_offset_mae": 0.05,
        "perception_heading_mae": 0.01,
    }
    trajectory = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.5]]
    for frames in (256, 1024):
        for strategy in ("modular", "e2e"):
            for seed in range(2):
                r = result(strategy, 1, seed, 0.5, None)
                knobs = {
                    "frames": frames,
                    "curvature": 0.02,
                    "test_length": 20.0,
                    "lighting": 1.0,
                    "noise": 0.03,
                }
                names = ("nominal", "dark", "noisy", "sharp", "noisy_x2", "sharp_x1.5")
                loop = {c: {**metrics, "trajectory": trajectory} for c in names}
                runs.append(
                    dataclasses.replace(
                        r, spec=r.spec.changed(knobs=knobs), artifacts={"closed_loop": loop}
                    )
                )
    paths = driving_figures(runs, "frames", tmp_path)
    assert [p.name for p in paths] == [
        "closed_loop_conditions.png",
        "error_propagation.png",
        "closed_loop_vs_shift.png",
        "closed_loop_vs_frames.png",
        "birds_eye.png",
        "camera_strip.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert driving_figures([], "frames", tmp_path) == []

    from e2elab.report.driving import closed_loop_rows, propagation_rows

    loop = closed_loop_rows(runs, "frames")
    assert len(loop) == 2 * 2 * 6  # frames x strategies x conditions
    assert loop[0]["frames"] == "256" and loop[0]["strategy"] == "modular"
    assert loop[0]["departures per km"] == "0.0 [0.0, 0.0]" and loop[0]["seeds"] == "2"
    blame = propagation_rows(runs, "frames")
    assert {row["strategy"] for row in blame} == {"modular"}  # e2e's ports are untrained
    assert blame[0]["at fault"] == "perception"
    assert blame[0]["steering error caused by perception"].startswith("0.0200")
    assert closed_loop_rows([], "frames") == [] and propagation_rows(runs, "nope") == []


def test_a_shipped_task_revision_gives_its_runs_new_ids():
    from e2elab import __version__
    from e2elab.execution import make_spec
    from e2elab.tasks import fingerprint
    from e2elab.tasks.digit_chain import DigitChain
    from e2elab.tasks.driving import Driving, DrivingSystem

    assert fingerprint(Driving, DrivingSystem) == f"e2elab-{__version__}-r2"
    assert fingerprint(DigitChain, object) == f"e2elab-{__version__}"  # unchanged ids
    spec = make_spec("driving", "e2e", budget=640)
    assert spec.code == f"e2elab-{__version__}-r2"
