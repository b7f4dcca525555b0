"""The HTML pages in a real headless Chromium: they render, every plot is a visible image with a nonzero
natural size, and the page makes no request beyond its own file:// URL and inline data: URLs. Requests are
recorded three ways — Playwright's request events, the DevTools protocol's Network domain, and a route on the
browser context that every network-bound request passes — and anything that is neither file: nor data: is
aborted there before it leaves the machine. Skips with the reason when playwright or
chromium is missing (scripts/setup-test-deps.sh installs chromium)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgetune.report.publish import compare_runs, render_run

from .conftest import add_optional, make_run

ALLOWED_SCHEMES = ("file:", "data:")


@dataclass
class Visit:
    page: object
    requests: list[str] = field(default_factory=list)  # every request any recorder saw
    routed: list[str] = field(default_factory=list)  # requests that reached the network layer
    blocked: dict[str, str] = field(default_factory=dict)  # url → why Chromium blocked it before sending
    console_errors: list[str] = field(default_factory=list)

    @property
    def outside(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(ALLOWED_SCHEMES)]


@pytest.fixture
def visit(browser):
    contexts = []

    def open_(path: Path) -> Visit:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        v = Visit(page)

        ids: dict[str, str] = {}

        def gate(route):
            v.requests.append(route.request.url)
            v.routed.append(route.request.url)
            route.continue_() if route.request.url.startswith(ALLOWED_SCHEMES) else route.abort()

        context.route("**/*", gate)
        page.on("request", lambda r: v.requests.append(r.url))
        page.on("console", lambda m: v.console_errors.append(m.text) if m.type == "error" else None)
        cdp = context.new_cdp_session(page)
        def sent(e):
            ids[e["requestId"]] = e["request"]["url"]
            v.requests.append(e["request"]["url"])

        def failed(e):
            if e.get("blockedReason"):
                v.blocked[ids.get(e["requestId"], "?")] = e["blockedReason"]

        cdp.on("Network.requestWillBeSent", sent)
        cdp.on("Network.loadingFailed", failed)
        cdp.send("Network.enable")
        page.goto(path.as_uri(), wait_until="load")
        page.wait_for_load_state("networkidle")
        return v

    yield open_
    for c in contexts:
        c.close()


def assert_plots_visible(v: Visit, expected: int) -> None:
    imgs = v.page.locator("img")
    assert imgs.count() == expected
    for k in range(expected):
        img = imgs.nth(k)
        img.scroll_into_view_if_needed()
        assert img.is_visible()
        complete, width, height = img.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]")
        assert complete and width > 100 and height > 100, (k, width, height)
        box = img.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100


@pytest.mark.parametrize(("optional", "n_plots"), [(False, 1), (True, 3)])
def test_report_page_renders_its_plots_and_requests_nothing(tmp_path, visit, optional, n_plots):
    run = make_run(tmp_path / "out")
    if optional:
        import json

        (run.run_dir / "report.json").write_text(json.dumps(add_optional(run.report)))
    done = render_run(run.run_dir)
    v = visit(done.html_path)
    assert v.page.title() == run.report["title"]
    assert v.page.locator("h1").inner_text() == run.report["title"]
    assert v.page.locator("#accuracy tbody tr").count() == len(run.report["builds"])
    assert v.page.locator("#recommendation").is_visible()
    assert v.page.locator("#fidelity").count() == (1 if optional else 0)
    assert_plots_visible(v, n_plots)
    assert v.requests and v.outside == [], v.outside  # the page's own file:// load was seen, nothing else
    assert v.console_errors == []


def test_compare_page_renders_and_requests_nothing(tmp_path, visit):
    a, b = make_run(tmp_path / "a", seed=1), make_run(tmp_path / "b", seed=2, target="rpi4-4gb")
    v = visit(compare_runs(a.run_dir, b.run_dir, tmp_path / "cmp").html_path)
    assert v.page.locator("#comparison tbody tr").count() == len(a.report["builds"])
    assert_plots_visible(v, 1)
    assert v.outside == [] and v.console_errors == []


def test_the_recorder_sees_external_requests(tmp_path, visit):
    """Negative control: a page that does fetch from outside is caught (and aborted), so the checks above
    could fail."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="stylesheet" href="http://127.0.0.1:9/x.css">'
                    '</head><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    v = visit(page)
    assert {"http://127.0.0.1:9/x.css", "http://127.0.0.1:9/x.png"} <= set(v.outside) & set(v.routed)


def test_the_content_security_policy_blocks_an_injected_external_image(tmp_path, visit, synthetic_run):
    """Defence in depth: were item text ever to reach the page unescaped, the page's CSP still stops
    fetches."""
    html = render_run(synthetic_run.run_dir).html_path.read_text()
    page = tmp_path / "injected.html"
    page.write_text(html.replace("</body>", '<img id="x" src="http://127.0.0.1:9/leak.png"></body>'))
    v = visit(page)
    leak = "http://127.0.0.1:9/leak.png"
    assert leak in v.requests  # the browser tried…
    assert v.blocked.get(leak) == "csp" and leak not in v.routed  # …and its CSP stopped it before the network
    assert any("Content Security Policy" in e for e in v.console_errors), v.console_errors
