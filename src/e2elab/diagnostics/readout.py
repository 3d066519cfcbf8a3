"""Linear read-outs fitted for a stack of seeds at once, in torch, on the run's device.

Each seed's read-out is its own problem; the seeds sit in a leading dimension and every
step (Newton's, with a backtracking line search) is taken per seed, a seed stopping when
its own gradient vanishes. So a seed's read-out does not depend on which seeds share its
stack. The problems are scikit-learn's, solved to convergence:

- ``LogisticRegression()`` (L2 penalty, C = 1, unpenalised intercept; multinomial over
  the classes seen in training, or with two classes the binary model) after
  ``StandardScaler``, scored by balanced accuracy;
- ``Ridge(alpha=1)`` after ``StandardScaler``, scored by R^2.

Everything runs in float64 (on the CPU where the device has none, e.g. MPS).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Newton stops for a seed when its gradient's largest entry is below this (the objective
# is a sum over rows, so the tolerance is per row), or after MAX_STEPS steps
TOLERANCE = 1e-9
MAX_STEPS = 100
# the intercepts' penalty: softmax logits are defined up to a common shift, so without
# one the unpenalised intercepts make the Hessian singular
_SHIFT = 1e-8


def standardized(fit: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    """``fit`` and ``test`` (seeds, rows, features) scaled by ``fit``'s mean and standard
    deviation per seed and feature (a constant feature is only centred)."""
    mean = fit.mean(dim=1, keepdim=True)
    std = fit.std(dim=1, unbiased=False, keepdim=True)
    std = torch.where(std > 1e-12 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
    return (fit - mean) / std, (test - mean) / std


def _with_intercept(x: Tensor) -> Tensor:
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def _logits(x: Tensor, w: Tensor, binary: bool) -> Tensor:
    """Every class's logit; with ``binary`` the first class is the reference (logit 0)."""
    z = x @ w
    return torch.cat([torch.zeros_like(z[..., :1]), z], dim=-1) if binary else z


def _objective(x: Tensor, onehot: Tensor, w: Tensor, binary: bool, penalty: Tensor) -> Tensor:
    """Per seed: the summed cross-entropy plus half the squared weights (not intercepts)."""
    logits = _logits(x, w, binary)
    loss = (torch.logsumexp(logits, dim=-1) - (logits * onehot).sum(-1)).sum(-1)
    return loss + 0.5 * (penalty * w * w).sum(dim=(-2, -1))


def fit_logistic(x: Tensor, labels: Tensor, classes: int) -> Tensor:
    """Weights (seeds, features + 1, classes or 1) of the L2-penalised logistic
    regression of ``labels`` (rows,) in 0..classes-1 on ``x`` (seeds, rows, features).

    Newton's method with a backtracking line search per seed. The Hessian is formed in
    float32 (it only sets the direction: the gradient, the objective and the stopping
    rule are float64), which halves the step's cost on a CPU."""
    x = _with_intercept(x)
    seeds, rows, width = x.shape
    binary = classes == 2
    outputs = 1 if binary else classes
    onehot = torch.nn.functional.one_hot(labels, classes).to(x.dtype).expand(seeds, -1, -1)
    target = onehot[..., 1:] if binary else onehot
    penalty = torch.ones(width, outputs, dtype=x.dtype, device=x.device)
    penalty[-1] = _SHIFT  # the intercept: unpenalised, but for the softmax's common shift
    w = torch.zeros(seeds, width, outputs, dtype=x.dtype, device=x.device)
    value = _objective(x, onehot, w, binary, penalty)
    active = torch.ones(seeds, dtype=torch.bool, device=x.device)
    single = x.float()
    # float32 leaves the Hessian's common-shift direction (where it is singular) at
    # about 1e-7 * rows either side of 0: the direction's damping is well above that
    damping = penalty.clone()
    damping[-1] = 1e-4 * rows
    damping = torch.diag(damping.reshape(-1))
    for _ in range(MAX_STEPS):
        p = torch.softmax(_logits(x, w, binary), dim=-1)
        p = p[..., 1:] if binary else p
        gradient = x.transpose(1, 2) @ (p - target) + penalty * w
        active &= gradient.abs().amax(dim=(-2, -1)) > TOLERANCE * rows
        if not bool(active.any()):
            break
        hessian = _hessian(single, p.float()).double() + damping
        factor, failed = torch.linalg.cholesky_ex(hessian)
        step = torch.cholesky_solve(gradient.reshape(seeds, -1, 1), factor).reshape(w.shape)
        step = torch.where((failed == 0)[:, None, None], step, gradient)  # a gradient step
        slope = (gradient * step).sum(dim=(-2, -1))
        scale = torch.ones(seeds, dtype=x.dtype, device=x.device)
        pending = active.clone()
        for _ in range(60):  # halve each seed's step until it decreases enough
            trial = w - scale[:, None, None] * step
            tried = _objective(x, onehot, trial, binary, penalty)
            pending &= ~(tried <= value - 1e-4 * scale * slope)
            if not bool(pending.any()):
                break
            scale = torch.where(pending, scale / 2, scale)
        moved = active & ~pending
        w = torch.where(moved[:, None, None], w - scale[:, None, None] * step, w)
        value = torch.where(moved, _objective(x, onehot, w, binary, penalty), value)
        active &= moved  # a seed whose line search failed is at its optimum (in float64)
    return w


def _hessian(x: Tensor, p: Tensor) -> Tensor:
    """The cross-entropy's Hessian in the weights, (seeds, F*K, F*K) for ``x`` (seeds,
    rows, F) and class probabilities ``p`` (seeds, rows, K): the sum over rows of
    x x^T (diag(p) - p p^T), weights ordered (feature, class)."""
    seeds, rows, width = x.shape
    outputs = p.shape[-1]
    scaled = (x[..., :, None] * p[..., None, :]).reshape(seeds, rows, width * outputs)
    hessian = -(scaled.transpose(1, 2) @ scaled)
    own = (scaled.transpose(1, 2) @ x).reshape(seeds, width, outputs, width)  # [a, k, b]
    blocks = hessian.view(seeds, width, outputs, width, outputs)
    blocks.diagonal(dim1=2, dim2=4).add_(own.permute(0, 1, 3, 2))  # (a, k), (b, k)
    return hessian


def predict_logistic(x: Tensor, w: Tensor, classes: int) -> Tensor:
    """The most probable class (seeds, rows) in 0..classes-1."""
    return _logits(_with_intercept(x), w, classes == 2).argmax(dim=-1)


def balanced_accuracy(predicted: Tensor, labels: Tensor) -> Tensor:
    """Per seed: the mean over the classes present in ``labels`` (rows,) of the share of
    their rows predicted right (scikit-learn's ``balanced_accuracy_score``)."""
    present = torch.unique(labels)
    recalls = [
        ((predicted == c) & (labels == c)).sum(-1).double() / (labels == c).sum().double()
        for c in present
    ]
    return torch.stack(recalls, dim=-1).mean(dim=-1)


def ridge_r2(x_fit: Tensor, y_fit: Tensor, x_test: Tensor, y_test: Tensor) -> Tensor:
    """Per seed: the R^2 on the test rows of ``Ridge(alpha=1)`` fitted with an
    intercept; ``y`` (rows,) or (rows, outputs), the same for every seed (R^2 averaged
    over outputs, 1 or 0 for a constant target as scikit-learn's ``r2_score``)."""
    y_fit = y_fit.reshape(len(y_fit), -1).to(x_fit)
    y_test = y_test.reshape(len(y_test), -1).to(x_fit)
    x_mean = x_fit.mean(dim=1, keepdim=True)
    y_mean = y_fit.mean(dim=0, keepdim=True)
    centred = x_fit - x_mean
    gram = centred.transpose(1, 2) @ centred
    gram = gram + torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    weights = torch.linalg.solve(gram, centred.transpose(1, 2) @ (y_fit - y_mean))
    predicted = (x_test - x_mean) @ weights + y_mean
    residual = ((y_test - predicted) ** 2).sum(dim=1)
    total = ((y_test - y_test.mean(dim=0)) ** 2).sum(dim=0).expand_as(residual)
    constant = total == 0
    score = 1 - residual / torch.where(constant, torch.ones_like(total), total)
    score = torch.where(constant, (residual == 0).to(score), score)
    return score.mean(dim=-1)
