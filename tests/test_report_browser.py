"""Every shipped experiment's report page, rendered in a real browser: headless Chromium
(Debian's ``chromium``), driven by playwright's Python package with the system browser
(``executable_path``; playwright downloads nothing). From a small fixture store of
hand-made runs, ``e2elab report`` writes the page; the test opens ``report.html`` from
disk at 1000, 1400 and 2000 px and checks that every image loads, nothing overflows
sideways, every claim has a verdict and working links to its evidence, and the console
shows no error. It also opens the index of several stores.

Skipped where Chromium or playwright is missing, unless E2ELAB_REQUIRE_BROWSER=1 (as CI
sets it after installing both: see .ci/run), where it fails instead."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from synthetic import fixture_store

from e2elab import experiment as experiments
from e2elab.cli import main

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _top_level() -> list[str]:
    """Shipped experiments and suites, leaving out the parts of a suite."""
    parts: set[str] = set()
    names = []
    for name in experiments.shipped():
        _, loaded = experiments.load_all(name)
        if len(loaded) > 1:
            parts |= {p.name for p in loaded}
        names.append(name)
    return [n for n in names if n not in parts]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or CHROMIUM is None:
        if os.environ.get("E2ELAB_REQUIRE_BROWSER") == "1":
            pytest.fail("the browser test needs chromium and playwright (see .ci/run)")
        pytest.skip("no chromium or no playwright here")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def _check_page(browser, path: Path, width: int) -> dict:
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    found = page.evaluate(
        """() => {
        const images = [...document.images];
        const claims = [...document.querySelectorAll("table.claims tbody tr")];
        const links = [...document.querySelectorAll("a[href^='#']")];
        return {
          images: images.length,
          broken: images.filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.alt),
          external: images.filter((i) => !i.src.startsWith("data:")).map((i) => i.src),
          overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
          claims: claims.length,
          verdicts: claims.map((r) => r.querySelector("td.verdict").textContent.trim()),
          dead: links.map((a) => a.getAttribute("href").slice(1))
                     .filter((id) => !document.getElementById(id)),
          evidence: claims.filter((r) => r.querySelector("td.links a")).length,
          json: document.body.textContent.includes('{"'),
        };
    }"""
    )
    page.close()
    return {**found, "errors": errors}


@pytest.mark.parametrize("name", _top_level())
def test_each_shipped_report_renders_in_chromium(browser, name, tmp_path):
    store = fixture_store(tmp_path / "store" / "results.sqlite", name)
    assert main(["report", str(store), "-o", str(tmp_path / "out")]) == 0
    page = tmp_path / "out" / "report.html"
    claims = sum(len(p.claims) for p in experiments.load_all(name)[1])
    for width in (1000, 1400, 2000):
        found = _check_page(browser, page, width)
        assert found["errors"] == [], found["errors"]
        assert found["images"] > 0 and found["broken"] == [], found["broken"]
        assert found["external"] == []  # every figure is embedded: the file stands alone
        assert found["overflow"] <= 0, f"{found['overflow']} px wider than the window"
        assert found["claims"] == claims
        assert set(found["verdicts"]) <= {"PASS", "FAIL", "INCONCLUSIVE"}
        assert found["dead"] == [], found["dead"]
        assert found["evidence"] == claims  # each claim links to a figure or table rows
        assert not found["json"]


def test_the_index_of_several_stores_links_every_claim_to_its_page(browser, tmp_path):
    stores = [
        fixture_store(tmp_path / name / "results.sqlite", name) for name in ("driving", "reuse")
    ]
    assert main(["report", *map(str, stores), "-o", str(tmp_path / "out")]) == 0
    index = tmp_path / "out" / "index.html"
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(index.as_uri())
    hrefs = page.eval_on_selector_all("td a", "links => links.map((a) => a.href)")
    page.close()
    claims = sum(len(p.claims) for n in ("driving", "reuse") for p in experiments.load_all(n)[1])
    assert len(hrefs) == claims
    target = browser.new_page()
    for href in hrefs:  # each lands on its claim's row
        page_url, anchor = href.split("#", 1)
        if target.url.split("#", 1)[0] != page_url:
            target.goto(href)
        assert target.evaluate(f"!!document.getElementById({anchor!r})"), href
    target.close()
