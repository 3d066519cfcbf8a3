"""Port kinds as objects. Each kind owns everything that depends on what a port's values
mean: its loss, its metric, its chance level and at-chance test, how its target is
written as a value (teacher forcing), how ensemble members' values are averaged, how a
linear probe reads it, and what a valid target looks like. Nothing else in e2elab
branches on a kind; a new scenario adds a kind by subclassing ``PortKind``.

Kinds that ship: ``class`` (logits over classes), ``binary`` (one +-1 score), ``regression``
(real values), ``reward`` (logits over choices, a reward per choice) and ``sequence``
(logits over a vocabulary at each position of a token sequence, with padding) and
``ctc`` (scores over labels per frame, trained by CTC against a shorter label sequence).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from e2elab.errors import E2ELabError, choices
from e2elab.ops import log_softmax, softmax

# Teacher forcing a class port writes the target as the log of a near one-hot
# distribution: a valid logit vector whose softmax puts 1 - 1e-5 on the target.
_FORCED_FLOOR = 1e-6
# Teacher forcing a binary (+1/-1) score port writes the target times this margin,
# so that sigmoid(score) is within 0.25% of 0 or 1.
_FORCED_MARGIN = 6.0


class PortKind:
    """What a port's values mean. Subclasses override what differs from a real value."""

    name: ClassVar[str] = ""
    metric_name: ClassVar[str] = "metric"
    # the metric is a success rate, so chance is tested binomially
    success_rate: ClassVar[bool] = False
    # a linear probe: "classify" (balanced accuracy), "regress" (R^2) or None (no probe)
    probe: ClassVar[str | None] = None
    # one class label per example, so a black-box classifier can be fitted to it
    one_label: ClassVar[bool] = False
    # the target can stand in for the value downstream (teacher forcing)
    forceable: ClassVar[bool] = True

    def loss(self, value: Tensor, target: Tensor, size: int) -> Tensor:
        raise NotImplementedError

    def metrics(self, value: Tensor, target: Tensor) -> dict[str, float]:
        """The port's metric under ``""`` (higher is better), and any others by name."""
        raise NotImplementedError

    def forced(self, target: Tensor, like: Tensor, size: int) -> Tensor:
        """The target written as a value of this port (teacher forcing)."""
        return target.to(like.dtype).reshape(like.shape)

    def average(self, values: list[Tensor]) -> Tensor:
        """Ensemble members' values combined into one."""
        return torch.stack(values).mean(0)

    def chance_level(self, declared: float, targets: Tensor) -> float:
        return declared

    def chance_p_value(self, metric: float, chance: float, n: int) -> float | None:
        """P(a learner that ignores its input scores at least ``metric`` on ``n``
        examples), or None where no test applies."""
        return None

    def probe_rows(self, values: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
        """(features, targets) rows for a linear probe of this port."""
        return values.reshape(len(values), -1), targets.reshape(len(targets), -1)

    def check_target(self, port: str, target: Tensor, value: Tensor, size: int) -> None:
        """Raise one line naming the port and the fix if ``target`` cannot score ``value``."""
        if target.shape != value.shape:
            raise E2ELabError(
                f"port {port!r}: target shape {tuple(target.shape)} differs from the value's "
                f"{tuple(value.shape)}; make the task's target match the port's value"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))


class ClassKind(PortKind):
    """Logits over ``size`` classes (any leading shape); target a class index."""

    name = "class"
    metric_name = "accuracy"
    success_rate = True
    probe = "classify"
    one_label = True

    def loss(self, value: Tensor, target: Tensor, size: int) -> Tensor:
        return F.nll_loss(log_softmax(value.reshape(-1, value.shape[-1])), target.reshape(-1))

    def metrics(self, value: Tensor, target: Tensor) -> dict[str, float]:
        return {"": (value.argmax(-1) == target).float().mean().item()}

    def forced(self, target: Tensor, like: Tensor, size: int) -> Tensor:
        return F.one_hot(target, size).to(like.dtype).clamp_min(_FORCED_FLOOR).log()

    def average(self, values: list[Tensor]) -> Tensor:
        return torch.stack([softmax(v) for v in values]).mean(0).clamp_min(1e-12).log()

    def chance_level(self, declared: float, targets: Tensor) -> float:
        """The declared chance, or the majority class's rate if higher."""
        _, counts = torch.unique(targets.flatten(), return_counts=True)
        return max(declared, counts.max().item() / targets.numel())

    def chance_p_value(self, metric: float, chance: float, n: int) -> float | None:
        if metric != metric:
            return None
        from scipy.stats import binom  # loaded where a run is judged, not at import

        return float(binom.sf(round(metric * n) - 1, n, chance))

    def probe_rows(self, values: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
        # (B, ..., C) codes and (B, ...) targets: one row per position
        return values.reshape(-1, values.shape[-1]), targets.reshape(-1)

    def check_target(self, port: str, target: Tensor, value: Tensor, size: int) -> None:
        _check_indices(port, target, size, "class index")
        if tuple(target.shape) != tuple(value.shape[:-1]) or value.shape[-1] != size:
            raise E2ELabError(
                f"port {port!r}: a class port of {size} classes needs values shaped "
                f"(..., {size}) and targets shaped like the values without the last "
                f"dimension; got values {tuple(value.shape)}, targets {tuple(target.shape)}"
            )


class BinaryKind(PortKind):
    """One score per example; target +1 or -1; hinge loss, accuracy of the sign."""

    name = "binary"
    metric_name = "accuracy"
    success_rate = True
    probe = "classify"
    one_label = True

    def loss(self, value: Tensor, target: Tensor, size: int) -> Tensor:
        return F.relu(1 - value.reshape(target.shape) * target.to(value.dtype)).mean()

    def metrics(self, value: Tensor, target: Tensor) -> dict[str, float]:
        sign = torch.where(value.reshape(target.shape) > 0, 1, -1)
        return {"": (sign == target.to(sign.dtype)).float().mean().item()}

    def forced(self, target: Tensor, like: Tensor, size: int) -> Tensor:
        return (target.to(like.dtype) * _FORCED_MARGIN).reshape(like.shape)

    def chance_level(self, declared: float, targets: Tensor) -> float:
        return ClassKind().chance_level(declared, targets)

    def chance_p_value(self, metric: float, chance: float, n: int) -> float | None:
        return ClassKind().chance_p_value(metric, chance, n)

    def probe_rows(self, values: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
        return values.reshape(len(values), -1), targets.reshape(-1)

    def check_target(self, port: str, target: Tensor, value: Tensor, size: int) -> None:
        if target.numel() and not bool(((target == 1) | (target == -1)).all()):
            raise E2ELabError(f"port {port!r}: a binary port's targets must be +1 or -1")
        if target.numel() != value.numel():
            raise E2ELabError(
                f"port {port!r}: a binary port needs one score per target; got values "
                f"{tuple(value.shape)}, targets {tuple(target.shape)}"
            )


class RegressionKind(PortKind):
    """``size`` real values; MSE loss; the metric is minus the MSE (higher is better)."""

    name = "regression"
    metric_name = "-MSE"
    probe = "regress"

    def loss(self, value: Tensor, target: Tensor, size: int) -> Tensor:
        return F.mse_loss(value, target)

    def metrics(self, value: Tensor, target: Tensor) -> dict[str, float]:
        return {"": -F.mse_loss(value, target).item()}

    def chance_level(self, declared: float, targets: Tensor) -> float:
        """Minus the targets' variance: the MSE of always predicting their mean."""
        return -float(targets.float().var(unbiased=False).item())

    def check_target(self, port: str, target: Tensor, value: Tensor, size: int) -> None:
        if not target.is_floating_point():
            raise E2ELabError(
                f"port {port!r}: a regression target must be a float tensor, got {target.dtype}"
            )
        super().check_target(port, target, value, size)


class RewardKind(PortKind):
    """Logits over ``size`` choices; target a reward per choice. Loss -z . softmax;
    metric the mean reward of the arg-max choice. Not a concept to probe."""

    name = "reward"
    metric_name = "reward"

    def loss(self, value: Tensor, target: Tensor, size: int) -> Tensor:
        return -(softmax(value) * target.to(value.dtype)).sum(-1).mean()

    def metrics(self, value: Tensor, target: Tensor) -> dict[str, float]:
        return {"": target.gather(-1, value.argmax(-1, keepdim=True)).float().mean().item()}

    def forced(self, target: Tensor, like: Tensor, size: int) -> Tensor:
        return like  # a reward vector is no value of the port: forcing leaves it as is

    def average(self, values: list[Tensor]) -> Tensor:
        return ClassKind().average(values)

    def chance_p_value(self, metric: float, chance: float, n: int) -> float | None:
        """Each reward lies in [-1, 1]: Hoeffding bounds the tail by exp(-n t^2 / 2)."""
        if metric != metric:
            return None
        excess = metric - chance
        return 1.0 if excess <= 0 else float(math.exp(-n * excess * excess / 2))


class SequenceKind(PortKind):
    """Logits (B, T, V) over a vocabulary of ``size`` tokens at each of T positions;
    target (B, T) token ids, ``pad`` where the sequence has ended. Per-token cross-entropy
    over the positions that are not padding; the metric is token accuracy over those
    positions, and ``exact`` the share of sequences right at every position."""

    name = "sequence"
    metric_name = "token accuracy"
    success_rate = True
    probe = "classify"

    def __init__(self, pad: int = 0) -> None:
        self.pad = pad

    def loss(self, value: Tensor, target: Tensor, size: int) -> Tensor:
        logits = log_softmax(value.reshape(-1, value.shape[-1]))  # (B*T, V)
        return F.nll_loss(logits, target.reshape(-1), ignore_index=self.pad)

    def metrics(self, value: Tensor, target: Tensor) -> dict[str, float]:
        real = target != self.pad  # (B, T)
        right = (value.argmax(-1) == target) | ~real
        tokens = (right & real).sum().item() / max(1, real.sum().item())
        return {"": tokens, "exact": right.all(-1).float().mean().item()}

    def forced(self, target: Tensor, like: Tensor, size: int) -> Tensor:
        return ClassKind().forced(target, like, size)

    def average(self, values: list[Tensor]) -> Tensor:
        return ClassKind().average(values)

    def chance_level(self, declared: float, targets: Tensor) -> float:
        """The declared chance, or the rate of the most common real (not pad) token."""
        real = targets[targets != self.pad]
        if not real.numel():
            return declared
        return ClassKind().chance_level(declared, real)

    def chance_p_value(self, metric: float, chance: float, n: int) -> float | None:
        # tokens of one sequence are not independent: test on sequences, conservatively
        return ClassKind().chance_p_value(metric, chance, n)

    def probe_rows(self, values: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
        x, y = values.reshape(-1, values.shape[-1]), targets.reshape(-1)
        keep = y != self.pad
        return x[keep], y[keep]

    def check_target(self, port: str, target: Tensor, value: Tensor, size: int) -> None:
        _check_indices(port, target, size, "token id")
        if target.dim() != 2 or tuple(value.shape) != (*target.shape, size):
            raise E2ELabError(
                f"port {port!r}: a sequence port of {size} tokens needs values shaped "
                f"(B, T, {size}) and targets (B, T); got values {tuple(value.shape)}, "
                f"targets {tuple(target.shape)}"
            )


class CTCKind(PortKind):
    """Scores (B, T, C) over C labels at each of T frames, label 0 the CTC blank; target
    (B, L) label ids 1..C-1, padded with 0 (the blank never is a target). The loss is CTC
    over all T frames (a system forces the blank on its padded frames, which then cost
    nothing); the metric is 1 - the token error rate of the greedy best path (edits over
    reference tokens, by jiwer), ``ter`` the error rate itself."""

    name = "ctc"
    metric_name = "1 - token error rate"
    forceable = False

    def loss(self, value: Tensor, target: Tensor, size: int) -> Tensor:
        logits = log_softmax(value).transpose(0, 1)  # (T, B, C)
        frames = torch.full((value.shape[0],), value.shape[1], dtype=torch.long)
        lengths = (target > 0).sum(-1)
        # per utterance over its target length, as the mean over the batch; an utterance
        # whose labels cannot fit its frames counts 0, not infinity
        return F.ctc_loss(logits, target, frames, lengths, blank=0, zero_infinity=True)

    def decoded(self, value: Tensor) -> list[list[int]]:
        from e2elab.decoding import greedy

        return greedy(value)

    def metrics(self, value: Tensor, target: Tensor) -> dict[str, float]:
        from e2elab.decoding import token_error_rate

        truth = [row[row > 0].tolist() for row in target.cpu()]
        ter = token_error_rate(truth, self.decoded(value))
        return {"": 1.0 - ter, "ter": ter}

    def forced(self, target: Tensor, like: Tensor, size: int) -> Tensor:
        raise E2ELabError(
            "a ctc port cannot be teacher-forced (its target has no value per frame), so "
            "strategies that force ports (modular, frozen_others, force=...) do not apply "
            "to this task; use greedy, e2e, hinted or pretrain_finetune"
        )

    def average(self, values: list[Tensor]) -> Tensor:
        return ClassKind().average(values)

    def check_target(self, port: str, target: Tensor, value: Tensor, size: int) -> None:
        _check_indices(port, target, size, "label id")
        if target.dim() != 2 or value.dim() != 3 or value.shape[-1] != size:
            raise E2ELabError(
                f"port {port!r}: a ctc port of {size} labels needs values shaped (B, T, "
                f"{size}) and targets (B, L) padded with 0; got values "
                f"{tuple(value.shape)}, targets {tuple(target.shape)}"
            )


def _check_indices(port: str, target: Tensor, size: int, what: str) -> None:
    if target.is_floating_point() or target.dtype == torch.bool:
        raise E2ELabError(
            f"port {port!r}: targets must be integers ({what}, torch.long), got "
            f"{target.dtype}; convert them with .long()"
        )
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= size):
        raise E2ELabError(
            f"port {port!r}: a {what} must lie in 0..{size - 1}, got values from "
            f"{int(target.min())} to {int(target.max())}; fix the target or the port's size"
        )


KINDS: dict[str, type[PortKind]] = {
    k.name: k for k in (ClassKind, BinaryKind, RegressionKind, RewardKind, SequenceKind, CTCKind)
}


def port_kind(kind: str | PortKind) -> PortKind:
    """A kind object from its name (``"class"``, ...) or as given."""
    if isinstance(kind, PortKind):
        return kind
    if kind not in KINDS:
        raise choices("port kind", kind, list(KINDS))
    return KINDS[kind]()


def describe_kind(kind: Any) -> str:
    return kind.name if isinstance(kind, PortKind) else str(kind)
