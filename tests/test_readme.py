"""The README's example of bringing your own modules and task runs and learns."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its marked example"
    return match.group(1)


def test_readme_example_trains_a_user_task_under_two_strategies():
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(_example(), str(README), "exec"), namespace)
    results = namespace["results"]
    assert set(results) == {"e2e", "modular"}
    assert results["modular"].status == "ok"
    assert results["modular"].final["xor"] >= 0.9
    assert results["modular"].final["side_a"] >= 0.9
    assert results["e2e"].final["xor"] > 0.6
