"""The strategy list that tests run on digit-chain: every named strategy, frozen_others
for the recognizer and for the last adder, and an ensemble."""

from __future__ import annotations


def every_strategy(n: int, members: int = 3) -> list[str]:
    """Every shipped training strategy for a digit-chain of ``n`` digits."""
    return [
        "e2e",
        "hinted",
        "modular",
        "greedy",
        "pretrain_finetune",
        "frozen_others:module=recognizer",
        f"frozen_others:module=adder_{n}",
        "local",
        f"ensemble:members={members}",
    ]
