"""Black-box baselines: scikit-learn learners on a task's raw inputs, without its modules.

Every input tensor of an example is flattened and concatenated into one feature vector;
the learner is fitted on the task's output target and scored on its fixed test set. This
is the "knows nothing of the structure" reference, e.g. the random forests, SVMs and
MLPs that stay near chance on pentomino in Gulcehre & Bengio (2016).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier

from e2elab.errors import E2ELabError, choices
from e2elab.task import Batch, Task

# A kernel SVM costs O(n^2) memory and time or worse: more examples than this are not
# used (the returned "examples_used" says how many were).
SVM_MAX_EXAMPLES = 5_000

Maker = Callable[[int, int], ClassifierMixin]


class GramSVC(ClassifierMixin, BaseEstimator):
    """``SVC(kernel="rbf", gamma="scale")``, the same model, fitted and applied faster.

    libsvm evaluates the RBF kernel one pair of examples at a time, without BLAS, and on
    pentomino's 4,096 pixels that is most of a fit. Here the Gram matrix is computed with
    matrix products (``sklearn.metrics.pairwise.rbf_kernel``, float64) and libsvm solves
    the same dual problem on it (``SVC(kernel="precomputed")``); prediction evaluates
    the kernel against the support vectors only. ``gamma`` is ``"scale"``'s value,
    1 / (features x variance of the training inputs). The kernel values agree with
    libsvm's to float64 rounding, so the fitted model is SVC's up to that rounding."""

    def __init__(self, C: float = 1.0, random_state: int | None = None) -> None:
        self.C = C
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: np.ndarray) -> GramSVC:
        x = np.asarray(x, dtype=np.float64)
        variance = float(x.var())
        self.gamma_ = 1.0 / (x.shape[1] * variance) if variance > 0 else 1.0
        self.svc_ = SVC(kernel="precomputed", C=self.C, random_state=self.random_state)
        self.svc_.fit(rbf_kernel(x, gamma=self.gamma_), y)
        self.support_vectors_ = x[self.svc_.support_]
        self.n_train_ = len(x)
        self.classes_ = self.svc_.classes_
        return self

    def predict(self, x: np.ndarray, chunk: int = 2048) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        out = []
        for start in range(0, len(x), chunk):  # (chunk, n_train) kernel rows at a time
            rows = np.zeros((len(x[start : start + chunk]), self.n_train_))
            rows[:, self.svc_.support_] = rbf_kernel(
                x[start : start + chunk], self.support_vectors_, gamma=self.gamma_
            )
            out.append(self.svc_.predict(rows))
        return np.concatenate(out)


MODELS: dict[str, tuple[Maker, int | None]] = {
    # name -> (make(seed, jobs), cap on training examples or None)
    "random_forest": (
        lambda seed, jobs: RandomForestClassifier(n_estimators=100, n_jobs=jobs, random_state=seed),
        None,
    ),
    "decision_tree": (lambda seed, jobs: DecisionTreeClassifier(random_state=seed), None),
    "svm": (lambda seed, jobs: GramSVC(random_state=seed), SVM_MAX_EXAMPLES),
    "mlp": (
        lambda seed, jobs: MLPClassifier(
            hidden_layer_sizes=(256, 256), early_stopping=True, max_iter=100, random_state=seed
        ),
        None,
    ),
    # linear models on standardised features; C is chosen on the task's validation set
    "logreg": (
        lambda seed, jobs: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)
        ),
        None,
    ),
    "linear_svm": (
        lambda seed, jobs: make_pipeline(
            StandardScaler(), LinearSVC(max_iter=5000, random_state=seed)
        ),
        None,
    ),
}

# scikit-learn's trees take sparse inputs, and their split search then visits only the
# non-zero values: on pentomino's pixels (under 1% non-zero) a decision tree fits about
# 40x faster and a forest about 7x, with the same splits, hence the same predictions.
# Inputs of these models go sparse where at most this share of the values is non-zero.
SPARSE_MODELS = frozenset({"random_forest", "decision_tree"})
SPARSE_DENSITY = 0.1

# hyper-parameter grids, searched on the task's validation set where it has one
GRIDS: dict[str, tuple[str, tuple[float, ...]]] = {
    "logreg": ("logisticregression__C", (0.01, 0.1, 1.0, 10.0)),
    "linear_svm": ("linearsvc__C", (0.001, 0.01, 0.1, 1.0)),
    "svm": ("C", (0.1, 1.0, 10.0)),
}


def image_features(batch: Batch, family: str) -> np.ndarray:
    """Hand-crafted ``family`` features (``e2elab.features``) of a batch's grey images:
    its input ``image`` (or its only input), shaped (N, 1, H, W) or (N, H, W)."""
    from e2elab.features import extract

    if "image" not in batch.x and len(batch.x) != 1:
        raise E2ELabError(
            "features= needs an input named 'image' (or a single input) holding grey "
            f"images; this task gives {sorted(batch.x)}"
        )
    images = batch.x["image"] if "image" in batch.x else next(iter(batch.x.values()))
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3:
        raise E2ELabError(
            f"features= needs grey images shaped (N, 1, H, W) or (N, H, W), got "
            f"{tuple(images.shape)}"
        )
    return extract(family, images.numpy())


def features(batch: Batch) -> np.ndarray:
    """Every input tensor flattened per example and concatenated: (B, features) float32;
    only ``image`` where a batch has one (its other inputs are derived from it)."""
    names = ["image"] if "image" in batch.x else sorted(batch.x)
    parts = [batch.x[name].reshape(len(batch), -1).float() for name in names]
    return torch.cat(parts, dim=1).numpy()


def fit_blackbox(
    task: Task,
    model: str,
    examples: int,
    seed: int,
    jobs: int = 1,
    feature_family: str | None = None,
) -> dict[str, Any]:
    """Fit ``model`` on ``examples`` training examples and score it on ``task.test_set()``.

    Examples are drawn with ``task.sample``, except for a task with a fixed finite
    training set (``task.train_set()``): then the learner sees at most that set, each
    example once (a random subset of it when ``examples`` or the model's cap is smaller).

    Returns train and test accuracy, the seconds spent fitting and scoring, and
    ``examples_used`` (lower than ``examples`` when the model caps its training size).
    ``jobs`` is the number of CPU cores a forest may use.
    """
    if model not in MODELS:
        raise choices("black-box model", model, list(MODELS))
    if examples < 1:
        raise E2ELabError(f"examples must be a positive integer, got {examples}")
    spec = task.ports[task.output]
    if not spec.port_kind.one_label:
        raise E2ELabError(
            f"black-box baselines fit classifiers; task {task.name}'s output port "
            f"{task.output!r} is of kind {spec.port_kind.name!r}"
        )
    cap = MODELS[model][1]
    used = examples if cap is None else min(examples, cap)
    began = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    finite = task.train_set_for(seed)
    if finite is None:
        train = task.sample(used, generator)
    else:
        used = min(used, len(finite))
        keep = torch.randperm(len(finite), generator=generator)[:used].sort().values
        train = finite if used == len(finite) else finite.take(keep)
    test = task.test_set()

    def dense(batch: Batch) -> np.ndarray:
        return features(batch) if feature_family is None else image_features(batch, feature_family)

    y_train, y_test = _target(train, task.output), _target(test, task.output)
    x_train = dense(train)
    sparse = (
        model in SPARSE_MODELS
        and np.count_nonzero(x_train) <= SPARSE_DENSITY * x_train.size
        and bool(np.isfinite(x_train).all())  # sklearn's trees take NaN only when dense
    )

    def inputs(batch: Batch) -> Any:
        x = dense(batch)
        return scipy.sparse.csr_matrix(x) if sparse else x

    if sparse:
        x_train = scipy.sparse.csc_matrix(x_train)  # the layout a tree's fit works in
    learner, chosen = _choose(task, model, seed, jobs, x_train, y_train, inputs)
    train_accuracy = float(np.mean(learner.predict(x_train) == y_train))
    fitted = time.perf_counter() - began
    test_accuracy = float(np.mean(learner.predict(inputs(test)) == y_test))
    return {
        "hyper_parameters": chosen,
        "model": model,
        "examples": examples,
        "examples_used": used,
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "chance": spec.chance,
        "test_size": len(test),
        "seconds": time.perf_counter() - began,
        "fit_seconds": fitted,
        "implementation": _implementation(learner, sparse),
    }


def _implementation(learner: ClassifierMixin, sparse: bool) -> str:
    """How the model was fitted: on dense or sparse inputs, and for the RBF SVM through
    its precomputed Gram matrix (the model itself is the same)."""
    if isinstance(learner, GramSVC):
        return "SVC on a precomputed RBF Gram matrix (GramSVC)"
    return "sparse inputs" if sparse else "dense inputs"


def _choose(
    task: Task,
    model: str,
    seed: int,
    jobs: int,
    x_train: Any,
    y_train: np.ndarray,
    inputs: Callable[[Batch], Any],
) -> tuple[ClassifierMixin, dict[str, float]]:
    """The learner fitted on the training set, with its hyper-parameter chosen by accuracy
    on the task's validation set (never the test set); the default where the task has no
    validation set or the model no grid."""
    make = MODELS[model][0]
    validation = task.validation_set()
    if model not in GRIDS or validation is None:
        return make(seed, jobs).fit(x_train, y_train), {}
    name, values = GRIDS[model]
    x_val, y_val = inputs(validation), _target(validation, task.output)
    best: tuple[float, float, ClassifierMixin] | None = None
    for value in values:
        learner = make(seed, jobs).set_params(**{name: value}).fit(x_train, y_train)
        score = float(np.mean(learner.predict(x_val) == y_val))
        if best is None or score > best[0]:
            best = (score, value, learner)
    assert best is not None
    return best[2], {name.split("__")[-1]: best[1], "validation_accuracy": best[0]}


def _target(batch: Batch, port: str) -> np.ndarray:
    target = batch.targets[port]
    if target.dim() != 1:
        raise E2ELabError(
            f"black-box baselines need one target per example; port {port!r} has targets "
            f"of shape {tuple(target.shape)}"
        )
    return target.numpy()
