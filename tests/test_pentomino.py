"""pentomino: sprites, hints and labels agree with the pixels; train and test are disjoint;
the cache round-trips; the system's ports trace to p1nn and p2nn; baselines run."""

import importlib
from collections import Counter

import numpy as np
import pytest
import torch

from e2elab import baselines, run
from e2elab.baselines import fit_blackbox
from e2elab.errors import E2ELabError
from e2elab.execution import first_batch
from e2elab.system import trace
from e2elab.tasks import pentomino as pm
from e2elab.tasks import register
from e2elab.tasks.pentomino import Pentomino

register(Pentomino)

SMALL = {"train_size": 1000, "test_size": 400}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E2ELAB_CACHE", str(tmp_path / "cache"))


def _task(**knobs):
    return Pentomino(**{**SMALL, **knobs})


def _patches(images):
    """(N, 64, 64) -> (N, 64 cells, 8, 8), cell index 8 * grid row + grid column."""
    n = len(images)
    return images.reshape(n, 8, 8, 8, 8).transpose(0, 1, 3, 2, 4).reshape(n, 64, 8, 8)


def _crop(patch):
    rows, cols = np.nonzero(patch)
    return patch[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


# every (class, rotation, scale) sprite, keyed by its cropped pixels
VARIANTS = {
    (bitmap := pm.variant_bitmap(c, r, s)).tobytes() + bytes(bitmap.shape): (c, r, s)
    for c in range(10)
    for r in range(4)
    for s in (1, 2)
}


def _identify(patch):
    crop = _crop(patch).astype(np.uint8)
    return VARIANTS.get(crop.tobytes() + bytes(crop.shape))


def _sprites(batch):
    """For each image: {cell: (class, rotation, scale)} read from the pixels alone."""
    patches = _patches(batch.x["images"].numpy().astype(np.uint8))
    found = []
    for image in patches:
        cells = np.nonzero(image.reshape(64, -1).any(1))[0]
        found.append({int(c): _identify(image[c]) for c in cells})
    return found


def test_the_ten_classes_are_the_chiral_pentominoes_and_their_mirrors():
    def orientations(bitmap):
        return {np.rot90(bitmap, k).tobytes() + bytes(np.rot90(bitmap, k).shape) for k in range(4)}

    all_orientations = [orientations(pm.shape_bitmap(c)) for c in range(10)]
    for c in range(10):
        bitmap = pm.shape_bitmap(c)
        assert bitmap.sum() == 5
        assert len(all_orientations[c]) == 4  # no rotational symmetry
        mirrored = np.fliplr(bitmap)
        # chiral: the mirror image is no rotation of the shape, but is class c +- 5
        assert not orientations(mirrored) & all_orientations[c]
        assert orientations(mirrored) == all_orientations[(c + 5) % 10]
    for a in range(10):
        for b in range(a + 1, 10):
            assert not all_orientations[a] & all_orientations[b]
    assert len(VARIANTS) == 80
    assert all(max(pm.variant_bitmap(c, r, 2).shape) <= 8 for c in range(10) for r in range(4))


def test_images_are_binary_and_shaped():
    batch = _task().sample(32, torch.Generator().manual_seed(0))
    images = batch.x["images"]
    assert images.shape == (32, 64, 64) and images.dtype == torch.float32
    assert set(images.unique().tolist()) == {0.0, 1.0}
    assert batch.targets["patches"].shape == (32, 64)
    assert batch.targets["same"].shape == (32,)


def test_exactly_half_the_images_are_positive():
    task = _task(train_size=1001, test_size=400)
    assert int(task._train.same.sum()) == 501
    assert int(task.test_set().targets["same"].sum()) == 200
    drawn = task.sample(2000, torch.Generator().manual_seed(1)).targets["same"].float().mean()
    assert 0.45 < drawn < 0.55


def test_three_sprites_in_distinct_cells_and_hints_match_the_pixels():
    batch = _task().test_set()
    hints = batch.targets["patches"].numpy()
    for image, found, hint in zip(batch.x["images"].numpy(), _sprites(batch), hints):
        assert len(found) == 3  # three non-empty cells, so three distinct cells
        assert sorted(found) == sorted(np.nonzero(hint != pm.EMPTY)[0].tolist())
        for cell, variant in found.items():
            assert variant is not None, "a non-empty patch holds no valid sprite"
            assert variant[0] == hint[cell]
        assert image.sum() == sum(5 * v[2] ** 2 for v in found.values())
        empty = _patches(image[None])[0][hint == pm.EMPTY]
        assert not empty.any()


def test_labels_follow_the_sprite_classes():
    batch = _task().test_set()
    for found, same in zip(_sprites(batch), batch.targets["same"].tolist()):
        counts = sorted(Counter(v[0] for v in found.values()).values())
        assert counts == ([3] if same else [1, 2])


def test_every_class_rotation_and_scale_occurs():
    found = [v for image in _sprites(_task().test_set()) for v in image.values()]
    assert {v[0] for v in found} == set(range(10))
    assert {v[1] for v in found} == set(range(4))
    assert {v[2] for v in found} == {1, 2}
    assert {(v[0], v[1], v[2]) for v in found} == set(VARIANTS.values())


def test_sprite_offsets_vary_within_the_cell():
    batch = _task().test_set()
    patches = _patches(batch.x["images"].numpy().astype(np.uint8))
    corners = set()
    for image in patches:
        for patch in image[image.reshape(64, -1).any(1)]:
            rows, cols = np.nonzero(patch)
            corners.add((rows.min(), cols.min()))
    assert len(corners) > 20


def _rows(packed):
    return {row.tobytes() for row in packed}


def test_train_and_test_are_disjoint():
    task = _task(train_size=3000)
    train, test = task._train.images, pm.pentomino_set("test", 400, 0).images
    assert not _rows(train) & _rows(test)
    assert not pm.hash_side(train).any() and pm.hash_side(test).all()
    sampled = pm.pack(task.sample(500, torch.Generator().manual_seed(2)).x["images"].numpy())
    assert _rows(sampled) <= _rows(train)
    assert _rows(pm.pack(task.test_set().x["images"].numpy())) == _rows(test)


def test_the_hash_splits_images_evenly_and_sees_every_pixel():
    same = np.zeros(2000, dtype=np.int8)
    images, _ = pm.render(same, np.random.default_rng(0))
    assert 0.45 < pm.hash_side(images).mean() < 0.55
    pixels = pm.unpack(images[:1]).repeat(64 * 64, axis=0)
    flat = pixels.reshape(len(pixels), -1)
    flat[np.arange(len(flat)), np.arange(len(flat))] ^= 1  # flip one pixel per copy
    hashes = pm.image_hash(pm.pack(pixels))
    assert len(set(hashes.tolist()) | {int(pm.image_hash(images[:1])[0])}) == 64 * 64 + 1


def test_sets_are_fixed_by_seed_and_differ_across_seeds_and_splits():
    a, b = pm.generate("train", 300, 0), pm.generate("train", 300, 0)
    c = pm.generate("train", 300, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    with pytest.raises(E2ELabError, match="train"):
        pm.generate("validation", 10, 0)


def test_sampling_is_reproducible_with_the_generator():
    task = _task()
    x = task.sample(16, torch.Generator().manual_seed(5)).x["images"]
    y = task.sample(16, torch.Generator().manual_seed(5)).x["images"]
    z = task.sample(16, torch.Generator().manual_seed(6)).x["images"]
    assert torch.equal(x, y) and not torch.equal(x, z)


def test_cache_round_trips_and_a_corrupt_file_is_regenerated(tmp_path, monkeypatch):
    first = pm.load_or_generate("train", 300, 3, tmp_path)
    path = pm.cache_path(tmp_path, "train", 300, 3)
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind

    def refuse(*args):
        raise AssertionError("generated although a valid cache file exists")

    with monkeypatch.context() as m:
        m.setattr(pm, "generate", refuse)
        again = pm.load_or_generate("train", 300, 3, tmp_path)
    assert np.array_equal(first.images, again.images)
    assert torch.equal(first.patches, again.patches) and torch.equal(first.same, again.same)

    for damage in (b"not a zip file", path.read_bytes()[:1000]):
        path.write_bytes(damage)
        repaired = pm.load_or_generate("train", 300, 3, tmp_path)
        assert np.array_equal(first.images, repaired.images)
        assert torch.equal(first.same, repaired.same)
        with monkeypatch.context() as m:  # and the file was rewritten whole
            m.setattr(pm, "generate", refuse)
            pm.load_or_generate("train", 300, 3, tmp_path)


def test_a_cache_file_of_the_wrong_split_is_not_trusted(tmp_path):
    test = pm.load_or_generate("test", 300, 0, tmp_path)
    # a test set saved under the train set's name must not leak into training
    pm.cache_path(tmp_path, "test", 300, 0).replace(pm.cache_path(tmp_path, "train", 300, 0))
    train = pm.load_or_generate("train", 300, 0, tmp_path)
    assert not _rows(train.images) & _rows(test.images)


def test_ports_trace_to_their_producers():
    task = _task(p1_width=16, p2_width=16)
    graph = trace(task.build_system(), first_batch(task), task.ports)
    assert graph.modules == ("p1nn", "p2nn")
    assert graph.ports == ("patches", "same")
    assert graph.producers["patches"] == {"p1nn"}
    assert graph.producers["same"] == {"p2nn"}


def test_p1nn_sees_each_patch_in_grid_order():
    task = _task(p1_width=16, p2_width=16)
    system, batch = task.build_system(), task.test_set().slice(0, 4)
    seen = {}
    codes = system._codes

    def spy(patches):
        seen["x"] = patches
        return codes(patches)

    system._codes = spy  # what p1nn is applied to, patch by patch
    ports = system.run_ports(batch)
    assert ports["patches"].shape == (4, 64, 11) and ports["same"].shape == (4, 2)
    patches = seen["x"].reshape(4, 64, 8, 8)
    images = batch.x["images"]
    for cell in (0, 9, 27, 63):
        r, c = divmod(cell, 8)
        assert torch.equal(patches[:, cell], images[:, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8])


def test_hinted_run_trains_both_ports(monkeypatch):
    # linear probes of the (B, 64, 11) patch codes fit 128k rows (twice): tens of seconds
    run_module = importlib.import_module("e2elab.execution")
    monkeypatch.setattr(
        run_module, "stack_probes", lambda task, systems, device: [{} for _ in systems]
    )
    task = _task(p1_width=32, p2_width=32)
    result = run(task, "hinted", budget=1920, evaluations=2, lr=3e-3)
    assert result.status == "ok"
    assert set(result.final) == {"patches", "same"}
    assert result.modules == {"p1nn": ["patches"], "p2nn": ["same"]}
    assert result.chance["patches"] == pytest.approx(61 / 64)
    assert result.curve[-1]["examples"] == 1920
    # the loss on the hints teaches p1nn at least that most patches are empty
    assert result.curve[0]["metrics"]["patches"] < 0.5
    assert result.final["patches"] > 0.9


def test_blackbox_baselines_fit_and_score():
    task = _task()
    forest = fit_blackbox(task, "random_forest", 500, seed=0)
    assert forest["train_accuracy"] > 0.95  # a forest memorises its training set
    # and generalises worse than it memorises (pentomino is hard for a forest)
    assert forest["test_accuracy"] < forest["train_accuracy"]
    assert forest["examples_used"] == 500 and forest["seconds"] > 0
    again = fit_blackbox(task, "random_forest", 500, seed=0)
    assert again["test_accuracy"] == forest["test_accuracy"]
    svm = fit_blackbox(task, "svm", 200, seed=0)
    assert svm["examples_used"] == 200 and 0.0 <= svm["test_accuracy"] <= 1.0


def test_svm_training_size_is_capped(monkeypatch):
    make, _ = baselines.MODELS["svm"]
    monkeypatch.setitem(baselines.MODELS, "svm", (make, 100))
    result = fit_blackbox(_task(), "svm", 300, seed=0)
    assert result["examples"] == 300 and result["examples_used"] == 100


def test_unknown_blackbox_model_is_rejected():
    with pytest.raises(E2ELabError, match=r"xgboost.*random_forest.*svm"):
        fit_blackbox(_task(), "xgboost", 100, seed=0)


def test_blackbox_sees_a_finite_training_set_at_most_once():
    task = _task(train_size=300)
    result = fit_blackbox(task, "decision_tree", 10_000, seed=0)
    assert result["examples"] == 10_000 and result["examples_used"] == 300
    # a tree grown on each training image once fits all 300 of them
    assert result["train_accuracy"] == 1.0
    subset = fit_blackbox(task, "decision_tree", 120, seed=1)
    assert subset["examples_used"] == 120


def test_train_set_is_the_pool_that_sample_draws_from():
    task = _task(train_size=200)
    pool = task.train_set()
    assert len(pool) == 200
    drawn = task.sample(50, torch.Generator().manual_seed(3)).x["images"]
    rows = {bytes(image.numpy().astype(np.uint8)) for image in pool.x["images"]}
    assert all(bytes(image.numpy().astype(np.uint8)) in rows for image in drawn)


def test_skipping_empty_patches_gives_the_dense_values_and_gradients():
    task = _task()
    torch.manual_seed(0)
    system = task.build_system()
    batch = task.sample(32, torch.Generator().manual_seed(0))

    def values_and_grads():
        for p in system.parameters():
            p.grad = None
        ports = system.run_ports(batch)
        (ports["same"].logsumexp(-1).sum() + ports["patches"].pow(2).sum()).backward()
        return ports, [p.grad.clone() for p in system.parameters()]

    sparse, sparse_grads = values_and_grads()
    system._codes = system.p1nn  # the dense path: p1nn on all 64 patches
    dense, dense_grads = values_and_grads()
    for port in ("patches", "same"):
        assert torch.allclose(sparse[port], dense[port], atol=1e-6)
    for a, b in zip(sparse_grads, dense_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())
