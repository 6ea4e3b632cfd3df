"""The dashboard in a real browser: `choreoscope dashboard` served headless, every page opened
in Debian's chromium-headless-shell, screenshots saved to artifacts/screenshots/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import unavailable
from tests.dashboard.store_rows import (
    EVIL_TYPE,
    MD_ID,
    URL_ID,
    add,
    fill,
    many_arrivals,
    weird_rows,
)

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
JAEGER_UI = "http://jaeger.example:16686"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(url: str, log: Path, *args: str, base_path: str = "") -> Iterator[str]:
    """`choreoscope dashboard` on the store at `url` (with more `args`, under `base_path`)
    until the generator is closed; yields the app's URL."""
    port = _free_port()
    env = {**os.environ, "STREAMLIT_SERVER_BASE_URL_PATH": base_path}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "dashboard",
             "--port", str(port), "--refresh", "0", *args],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}" + (f"/{base_path}" if base_path else "")
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"dashboard did not start: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`choreoscope dashboard` on a filled store; yields its base URL."""
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'store.db'}"
    fill(url).dispose()
    yield from _serve(url, tmp_path_factory.mktemp("log") / "dashboard.log",
                      "--jaeger-ui", JAEGER_UI)


@pytest.fixture(scope="module")
def based_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`choreoscope dashboard` under the base path `/cs`, on the filled store plus flows whose
    ids and types are URL and Markdown syntax; yields its URL (ending in `/cs`)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'weird.db'}"
    add(fill(url), weird_rows()).dispose()
    yield from _serve(url, tmp_path_factory.mktemp("log") / "based.log", base_path="cs")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's chromium-headless-shell, driven by playwright."""
    exe = shutil.which("chromium-headless-shell")
    if exe is None:
        unavailable("chromium-headless-shell", "not on PATH (apt-get install chromium-headless-shell)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def _new_page(browser: object, **context: object) -> object:
    p = browser.new_context(viewport={"width": 1400, "height": 1000}, **context).new_page()  # type: ignore[attr-defined]
    p.set_default_timeout(30_000)
    return p


@pytest.fixture(scope="module")
def page(server: str, browser: object) -> object:
    return _new_page(browser)


def _open(page: object, server: str, path: str, shot: str, ready: str) -> None:
    page.goto(server + path)  # type: ignore[attr-defined]
    page.wait_for_selector(ready, state="visible")  # type: ignore[attr-defined]
    # Streamlit shows skeletons while a script runs; wait until none is left.
    page.wait_for_selector("[data-testid=stSkeleton]", state="detached")  # type: ignore[attr-defined]
    page.wait_for_timeout(500)  # type: ignore[attr-defined]  # let charts finish drawing
    _screenshot(page, shot)


def _screenshot(page: object, name: str) -> None:
    """A full-page screenshot; Streamlit scrolls inside its main block, so grow the viewport
    to the content's height first."""
    height = page.evaluate(  # type: ignore[attr-defined]
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
        "[data-testid=stMainBlockContainer]')].map(e => e.scrollHeight), 1000)")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 80, 6000)})  # type: ignore[attr-defined]
    page.wait_for_timeout(400)  # type: ignore[attr-defined]
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]
    page.set_viewport_size({"width": 1400, "height": 1000})  # type: ignore[attr-defined]


def _text(page: object) -> str:
    return page.inner_text("[data-testid=stMain]")  # type: ignore[attr-defined,no-any-return]


def test_overview_in_the_browser(page: object, server: str) -> None:
    """The overview shows its metrics and its anomalies chart."""
    _open(page, server, "/", "overview", "[data-testid=stMetric]")
    text = _text(page)
    for label in ("Events stored", "Completed", "Stuck", "Out-of-order arrivals",
                  "Outbox backlog"):
        assert label in text
    assert page.locator("[data-testid=stMetric]").count() == 12  # type: ignore[attr-defined]
    page.wait_for_selector("[data-testid=stVegaLiteChart] canvas, "  # type: ignore[attr-defined]
                           "[data-testid=stVegaLiteChart] svg")


def test_overview_tiles_wrap_in_a_narrow_window(browser: object, server: str) -> None:
    """In an 800 px window beside the open sidebar the four tiles of a row take two rows,
    each wide enough for its figure; at 1400 px they stay on one row."""
    def tops_and_widths(width: int) -> list[tuple[int, int]]:
        narrow = _new_page(browser)
        narrow.set_viewport_size({"width": width, "height": 1000})  # type: ignore[attr-defined]
        narrow.goto(server + "/")  # type: ignore[attr-defined]
        narrow.wait_for_selector("text=Events stored")  # type: ignore[attr-defined]
        narrow.wait_for_timeout(500)  # type: ignore[attr-defined]
        boxes = narrow.evaluate(  # type: ignore[attr-defined]
            "() => [...document.querySelectorAll('[data-testid=stMetric]')].slice(0, 4)"
            ".map(e => e.getBoundingClientRect()).map(r => [Math.round(r.top), r.width])")
        narrow.close()  # type: ignore[attr-defined]
        return [(int(top), int(w)) for top, w in boxes]

    narrow = tops_and_widths(800)
    assert len({top for top, _ in narrow}) == 2  # two rows of two
    assert min(w for _, w in narrow) >= 180
    assert len({top for top, _ in tops_and_widths(1400)}) == 1


def test_flow_map_in_the_browser(page: object, server: str) -> None:
    """The flow map draws the graph as SVG with service and event-type nodes."""
    _open(page, server, "/flow_map", "flow_map", "[data-testid=stGraphVizChart] svg")
    svg = page.inner_html("[data-testid=stGraphVizChart] svg")  # type: ignore[attr-defined]
    for node in ("order-service", "order.placed", "payment-service", "shipping-service"):
        assert node in svg
    # a map this small is drawn at its natural size, not stretched over the page
    widths = page.evaluate(  # type: ignore[attr-defined]
        "() => [document.querySelector('[data-testid=stGraphVizChart] svg')"
        ".getBoundingClientRect().width, document.querySelector("
        "'[data-testid=stMainBlockContainer]').getBoundingClientRect().width]")
    assert widths[0] < widths[1] / 2


def test_flows_deep_link_in_the_browser(page: object, server: str) -> None:
    """`/flows?flow=ord-1` shows the table, the flow's detail, timeline and a Jaeger button."""
    _open(page, server, "/flows?flow=ord-1", "flows", "[data-testid=stDataFrame]")
    page.wait_for_selector("text=Flow ord-1")  # type: ignore[attr-defined]
    page.wait_for_selector("[data-testid=stVegaLiteChart]")  # type: ignore[attr-defined]
    _screenshot(page, "flows")
    text = _text(page)
    assert "Open in Jaeger" in text
    link = page.locator("a:has-text('Open in Jaeger')").first  # type: ignore[attr-defined]
    assert link.get_attribute("href") == f"{JAEGER_UI}/trace/{1:032x}"
    assert "flow=ord-1" in page.url  # type: ignore[attr-defined]


def test_root_deep_link_opens_the_flows_page(page: object, server: str) -> None:
    """A copied `/?flow=ID` URL lands on the Flows page with that flow open."""
    page.goto(server + "/?flow=ord-2")  # type: ignore[attr-defined]
    page.wait_for_selector("text=Flow ord-2")  # type: ignore[attr-defined]
    assert page.url.endswith("/flows?flow=ord-2")  # type: ignore[attr-defined]
    assert page.locator("text=Page not found").count() == 0  # type: ignore[attr-defined]


def test_out_of_order_in_the_browser(page: object, server: str) -> None:
    """The out-of-order page names the late event; opening it shows both orders."""
    _open(page, server, "/out_of_order", "out_of_order", "[data-testid=stExpander]")
    page.locator("[data-testid=stExpander] summary").first.click()  # type: ignore[attr-defined]
    page.wait_for_selector("text=Expected order")  # type: ignore[attr-defined]
    page.wait_for_timeout(500)  # type: ignore[attr-defined]
    _screenshot(page, "out_of_order")
    text = _text(page)
    assert "e2-placed" in text and "Observed order" in text


def test_outbox_in_the_browser(page: object, server: str) -> None:
    """The outbox page shows both sources, the unreachable one masked."""
    _open(page, server, "/outbox", "outbox", "[data-testid=stMetric]")
    text = _text(page)
    assert "orders-db" in text and "billing-db" in text
    assert "Unreachable" in text and "hunter2" not in text


def test_variants_in_the_browser(page: object, server: str) -> None:
    """The variants page lists the variants table and a flow list."""
    _open(page, server, "/variants", "variants", "[data-testid=stDataFrame]")
    assert "5 flows" in _text(page) or "over 5 flows" in _text(page)


def test_event_health_in_the_browser(page: object, server: str) -> None:
    """Event health shows problems, versions and untraced events."""
    _open(page, server, "/event_health", "event_health", "[data-testid=stMetric]")
    text = _text(page)
    assert "Envelope problems" in text and "Events without trace context" in text


def _refresh(page: object) -> tuple[str, bool, str]:
    """The sidebar's auto-refresh choice, whether it is paused, and the URL's query."""
    sidebar = page.locator("[data-testid=stSidebar]")  # type: ignore[attr-defined]
    return (sidebar.locator("input[role=combobox]").input_value(),
            sidebar.locator("input[type=checkbox]").is_checked(),
            page.url.partition("?")[2])  # type: ignore[attr-defined]


def _go(page: object, title: str) -> None:
    """Change page by the sidebar's navigation and wait for the new page to be drawn."""
    sidebar = page.locator("[data-testid=stSidebar]")  # type: ignore[attr-defined]
    sidebar.get_by_role("link", name=title, exact=True).click()
    page.wait_for_selector(f"h1:has-text('{title}')")  # type: ignore[attr-defined]
    page.wait_for_selector("[data-testid=stSkeleton]", state="detached")  # type: ignore[attr-defined]
    page.wait_for_timeout(800)  # type: ignore[attr-defined]


def test_refresh_choice_survives_page_changes(page: object, server: str) -> None:
    """The interval from the URL, one picked in the sidebar and a pause each stay as they
    are in the widgets through page changes back and forth; the URL gets a pick, and a page
    opening writes nothing (each write would be one more entry in the history)."""
    _open(page, server, "/?refresh=10", "refresh", "[data-testid=stMetric]")
    assert _refresh(page) == ("every 10 s", False, "refresh=10")
    _go(page, "Flows")
    assert _refresh(page) == ("every 10 s", False, "")
    _go(page, "Outbox")
    assert _refresh(page) == ("every 10 s", False, "")
    sidebar = page.locator("[data-testid=stSidebar]")  # type: ignore[attr-defined]
    sidebar.locator("input[role=combobox]").click()
    page.get_by_role("option", name="every 30 s").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/outbox?refresh=30")  # type: ignore[attr-defined]
    _go(page, "Overview")
    assert _refresh(page) == ("every 30 s", False, "")
    sidebar.get_by_text("Pause").click()
    # paused is this server's default (`--refresh 0`), so the URL leaves `refresh` out
    page.wait_for_url(lambda url: "refresh" not in url)  # type: ignore[attr-defined]
    _go(page, "Flows")
    assert _refresh(page) == ("every 30 s", True, "")
    _go(page, "Overview")
    assert _refresh(page) == ("every 30 s", True, "")
    page.goto(server + "/")  # type: ignore[attr-defined]  # a new session for the next test


def test_time_charts_draw_without_console_errors(page: object, server: str) -> None:
    """The overview's events chart, the out-of-order chart and a flow's timeline draw their
    marks, and Vega logs no warning or error (an explicit time domain beside an x2 channel
    made it warn)."""
    logged: list[str] = []

    def listen(message: object) -> None:
        if message.type in ("error", "warning"):  # type: ignore[attr-defined]
            logged.append(message.text)  # type: ignore[attr-defined]

    page.on("console", listen)  # type: ignore[attr-defined]
    try:
        for path, shot in (("/", "overview_time_chart"), ("/out_of_order", "out_of_order_chart"),
                           ("/flows?flow=ord-1", "flow_timeline")):
            _open(page, server, path, shot, "[data-testid=stVegaLiteChart] .marks")
            assert page.locator(  # type: ignore[attr-defined]
                "[data-testid=stVegaLiteChart] .marks").count() >= 1
    finally:
        page.remove_listener("console", listen)  # type: ignore[attr-defined]
    # Streamlit itself probes /<page>/_stcore/... first when a page's URL is opened directly
    assert [m for m in logged if not m.startswith("Failed to load resource")] == []


def test_flow_timeline_is_in_utc_in_any_time_zone(browser: object, server: str) -> None:
    """In a browser in India (UTC+5:30) the timeline's axis and tooltips give UTC times, as
    the rest of the page does: ord-1's events are at 00:01:00.000 to 00:01:00.200 UTC."""
    india = _new_page(browser, timezone_id="Asia/Kolkata")
    try:
        _open(india, server, "/flows?flow=ord-1", "flow_timeline_utc",
              "[data-testid=stVegaLiteChart] .marks")
        chart = india.locator("[data-testid=stVegaLiteChart]")  # type: ignore[attr-defined]
        assert chart.locator("[aria-label^='X-axis']").get_attribute("aria-label") == (
            "X-axis for a utc scale with values from 00:01:00.000 to 00:01:00.200")
        chart.locator("[aria-label*='order.shipped']").first.hover(force=True)
        tip = india.locator("#vg-tooltip-element")  # type: ignore[attr-defined]
        tip.wait_for(state="visible")
        assert "00:01:00.200 UTC" in tip.inner_text()
    finally:
        india.context.close()  # type: ignore[attr-defined]


def test_flow_links_work_under_a_base_path(browser: object, based_server: str) -> None:
    """Under `--server.baseUrlPath cs`, the Variants page's link to a flow whose id holds a
    space, `/`, `&`, `#`, `?` and `%` opens that flow on the Flows page."""
    p = _new_page(browser)
    try:
        _open(p, based_server, "/variants?variant=" + quote("order.placed > order.shipped"),
              "variants_base_path", "[data-testid=stDataFrame]")
        table = p.locator("[data-testid=stDataFrame]").nth(1)  # type: ignore[attr-defined]
        table.scroll_into_view_if_needed()
        box = table.bounding_box()
        x, y = box["x"] + 40, box["y"] + 53  # the first row's link
        p.mouse.move(x, y)  # type: ignore[attr-defined]  # the grid finds the link on hover
        p.wait_for_timeout(300)  # type: ignore[attr-defined]
        with p.context.expect_page() as opened:  # type: ignore[attr-defined]
            p.mouse.click(x, y)  # type: ignore[attr-defined]
        from playwright.sync_api import expect

        flow = opened.value
        flow.get_by_text(f"Flow {URL_ID}", exact=True).wait_for()
        assert flow.url.startswith(f"{based_server}/flows?")
        # the page may still be running its script: wait as long as for the rest
        expect(flow.get_by_role("textbox", name="Open flow")).to_have_value(URL_ID, timeout=30_000)
        assert flow.locator("text=Page not found").count() == 0
    finally:
        p.context.close()  # type: ignore[attr-defined]



def test_bus_text_shows_as_typed_in_the_browser(browser: object, based_server: str) -> None:
    """An event type holding a Markdown link and bold shows as typed in the causal tree: no
    link to evil.example anywhere on the page."""
    p = _new_page(browser)
    try:
        _open(p, based_server, "/flows?flow=" + quote(MD_ID, safe=""), "flow_markdown",
              "[data-testid=stTabs]")
        p.get_by_role("tab", name="Causal tree").click()  # type: ignore[attr-defined]
        item = p.locator("[data-testid=stMarkdownContainer] li").filter(  # type: ignore[attr-defined]
            has_text=EVIL_TYPE)
        assert item.inner_text().startswith(f"{EVIL_TYPE} by weird-svc · subject `x` · ")
        assert p.get_by_text(f"Flow {MD_ID}", exact=True).count() == 1  # type: ignore[attr-defined]
        assert p.locator("a[href*='evil.example']").count() == 0  # type: ignore[attr-defined]
    finally:
        p.context.close()  # type: ignore[attr-defined]


def test_back_undoes_a_filter_change(page: object, server: str) -> None:
    """A filter chosen on the Flows page goes into the URL; the browser's Back takes the
    filter out again (the widget and the table follow the URL, not the session)."""
    _open(page, server, "/flows", "flows-filter", "[data-testid=stDataFrame]")
    page.wait_for_selector("text=5 flows match")  # type: ignore[attr-defined]
    status = page.get_by_role("combobox", name="Status")  # type: ignore[attr-defined]
    status.click()
    page.get_by_role("option", name="failed", exact=True).click()  # type: ignore[attr-defined]
    page.wait_for_url("**/flows?status=failed")  # type: ignore[attr-defined]
    page.wait_for_selector("text=1 flows match")  # type: ignore[attr-defined]
    page.go_back()  # type: ignore[attr-defined]
    page.wait_for_url(lambda url: url.endswith("/flows"))  # type: ignore[attr-defined]
    page.wait_for_selector("text=5 flows match")  # type: ignore[attr-defined]
    page.wait_for_timeout(800)  # type: ignore[attr-defined]
    assert page.url.endswith("/flows")  # type: ignore[attr-defined]  # not written back
    assert status.input_value() == "any"
    page.goto(server + "/")  # type: ignore[attr-defined]  # a new session for the next test


def test_back_after_a_page_change_with_refresh_chosen(page: object, server: str) -> None:
    """With an interval picked (so in the URL), a page change is one history entry: Back
    returns to the filtered page as it was, and the interval stays."""
    _open(page, server, "/flows?status=failed&refresh=30", "flows-refresh",
          "[data-testid=stDataFrame]")
    page.wait_for_selector("text=1 flows match")  # type: ignore[attr-defined]
    entries = page.evaluate("() => history.length")  # type: ignore[attr-defined]
    _go(page, "Variants")
    assert page.evaluate("() => history.length") == entries + 1  # type: ignore[attr-defined]
    page.go_back()  # type: ignore[attr-defined]
    page.wait_for_url("**/flows?status=failed&refresh=30")  # type: ignore[attr-defined]
    page.wait_for_selector("text=1 flows match")  # type: ignore[attr-defined]
    status = page.get_by_role("combobox", name="Status")  # type: ignore[attr-defined]
    assert status.input_value() == "failed"
    assert _refresh(page) == ("every 30 s", False, "status=failed&refresh=30")
    page.goto(server + "/")  # type: ignore[attr-defined]  # a new session for the next test


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`choreoscope dashboard` on the filled store plus 15 arrivals late at group `ledger`."""
    from choreoscope.collector.store import schema

    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'busy.db'}"
    add(fill(url), {schema.anomalies: many_arrivals("ledger", 15)}).dispose()
    yield from _serve(url, tmp_path_factory.mktemp("log") / "busy.log")


def test_an_opened_arrival_stays_in_sight_when_others_push_it_off_the_page(
        browser: object, busy_server: str) -> None:
    """An explanation left open stays on screen, under "Opened", when newer arrivals (or
    the pager) move its row off the page shown."""
    page = _new_page(browser)
    _open(page, busy_server, "/out_of_order", "ooo-opened", "[data-testid=stExpander]")
    newest = page.locator("[data-testid=stExpander] summary").first  # type: ignore[attr-defined]
    assert "ledger-14" in newest.inner_text()
    newest.click()
    page.wait_for_selector("text=group ledger processed ledger-14 late")  # type: ignore[attr-defined]
    box = page.get_by_label("Page (of 2)")  # type: ignore[attr-defined]
    box.fill("2")
    box.press("Enter")
    page.wait_for_selector("text=Opened (1, no longer on this page)")  # type: ignore[attr-defined]
    page.wait_for_selector("[data-testid=stSkeleton]", state="detached")  # type: ignore[attr-defined]
    _screenshot(page, "ooo-opened-page-2")
    summaries = page.locator("[data-testid=stExpander] summary")  # type: ignore[attr-defined]
    assert "ledger-14" in summaries.first.inner_text()
    assert page.locator("text=group ledger processed ledger-14 late").is_visible()  # type: ignore[attr-defined]
    assert summaries.count() == 1 + 6  # the opened one, then page 2: the 16 arrivals less 10
    page.close()  # type: ignore[attr-defined]
