"""The verdicts of shipped experiments' profiles, as one Markdown table per experiment:
each claim's verdict, its stability under seed resamples and its margin, per profile.

    python tools/verdicts.py quick=results/quick full=results/full > docs/verdicts.md

Each PROFILE=FOLDER holds one folder per experiment with ``report/claims.json`` in it
(``e2elab reproduce NAME [--quick] --out FOLDER/NAME`` writes it).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path


def _cpu() -> str:
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _capability() -> str:
    try:
        import torch

        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # torch absent or too old: say so rather than guess
        return "unknown"


def _cell(claim: dict | None) -> str:
    if claim is None:
        return "not run"
    stability = claim.get("stability") or ""
    # "-": no resample (one seed, or a check over SNR measurements, not over seeds' runs)
    shown = stability if stability and stability != "-" else "not resampled"
    text = f"**{claim['verdict']}** ({shown})"
    return text + (f"; {claim['margin']}" if claim.get("margin") else "")


def _tally(profile: str, claims: dict[str, dict]) -> str:
    fragile = [i for i, c in claims.items() if "fragile" in c.get("stability", "")]
    undecided = [i for i, c in claims.items() if c.get("undecided")]
    return (
        f"{profile}: {len(fragile)} fragile"
        + (f" ({', '.join(fragile)})" if fragile else "")
        + f"; {len(undecided)} undecided by the profile"
        + (f" ({', '.join(undecided)})" if undecided else "")
    )


def main(argv: list[str]) -> int:
    profiles = [arg.split("=", 1) for arg in argv]
    found: dict[str, dict[str, dict[str, dict]]] = {}  # experiment -> profile -> id -> claim
    for profile, folder in profiles:
        for path in sorted(Path(folder).glob("*/report/claims.json")):
            claims = json.loads(path.read_text())
            found.setdefault(path.parent.parent.name, {})[profile] = {c["id"]: c for c in claims}
    names = [p for p, _ in profiles]
    print("# What each profile decides\n")
    print(
        "Every shipped claim's verdict under each profile measured, with its stability "
        "under seed resamples (leave-one-seed-out, plus 200 bootstrap resamples from 5 "
        "seeds) and its margin to the claim's bound. Fragile: stable in under 80% of the "
        "resamples, so another seed (or another CPU's last bits) could decide it "
        "otherwise. Undecided: the profile's YAML names the claim and says why. "
        f"Measured on {_cpu()} (torch kernels: {_capability()}); written by "
        "`python tools/verdicts.py " + " ".join(f"{p}=DIR" for p, _ in profiles) + "`.\n"
    )
    for experiment, by_profile in sorted(found.items()):
        ids = list(dict.fromkeys(i for p in names for i in by_profile.get(p, {})))
        print(f"## {experiment}\n")
        print("| claim | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for claim_id in ids:
            cells = [_cell(by_profile.get(p, {}).get(claim_id)) for p in names]
            print(f"| {claim_id} | " + " | ".join(cells) + " |")
        for p in names:
            if by_profile.get(p):
                print("\n" + _tally(p, by_profile[p]))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
