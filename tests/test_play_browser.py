"""`fastca play` in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Skipped, with the reason, when Playwright or the browser is missing; .ci/run installs both.
"""

import os
import shutil
import time

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = os.environ.get("FASTCA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")


@pytest.fixture(scope="module")
def server_url():
    """A play server on a free port, in a thread of its own, for the module's tests."""
    from fastca.play import start_in_thread

    url, stop = start_in_thread(size=128, backend="numba-cpu")
    yield url
    stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        # evil.example resolves to this machine, as after a DNS-rebinding attack
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                              "--host-resolver-rules=MAP evil.example 127.0.0.1"])
        yield b
        b.close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.goto(url)
    page.wait_for_function("window.fastca && window.fastca.frames > 3", timeout=60000)
    return page


def canvas_point(page, row, col):
    """Page coordinates of the centre of cell (row, col)."""
    box = page.locator("#world").bounding_box()
    w, h = page.evaluate("[window.fastca.width, window.fastca.height]")
    return box["x"] + (col + 0.5) * box["width"] / w, box["y"] + (row + 0.5) * box["height"] / h


def labels_at(page, cells):
    return page.evaluate("(cells) => cells.map(([y, x]) => window.fastca.label[y * window.fastca.width + x])", cells)


def drag(page, cells, button="left"):
    page.mouse.move(*canvas_point(page, *cells[0]))
    page.mouse.down(button=button)
    for cell in cells[1:]:
        page.mouse.move(*canvas_point(page, *cell), steps=4)
    page.mouse.up(button=button)


def test_page_shows_running_digits_and_its_frame_rate(browser, server_url, tmp_path):
    page = open_page(browser, server_url)
    coloured = page.evaluate("""() => {
        const c = document.getElementById('world'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 200 || d[i + 1] < 200 || d[i + 2] < 200) n++;
        return n; }""")
    assert coloured > 500, "no digits visible on the canvas"
    step0 = page.evaluate("window.fastca.step")
    time.sleep(2.5)
    assert page.evaluate("window.fastca.step") > step0
    assert float(page.locator("#fps").inner_text()) > 0
    page.screenshot(path=str(tmp_path / "play.png"))
    page.close()


def test_a_drawn_stroke_lives_settles_and_can_be_erased(browser, server_url):
    page = open_page(browser, server_url)
    page.click("#clear")
    page.wait_for_function("window.fastca.label && window.fastca.label.every((v) => v === 255)", timeout=20000)
    stroke = [(30 + i, 64) for i in range(0, 40, 4)]  # a vertical bar: a "1"
    drag(page, stroke)
    page.wait_for_function("(cells) => cells.every(([y, x]) => window.fastca.label[y * window.fastca.width + x] !== 255)",
                           arg=[list(c) for c in stroke], timeout=20000)
    time.sleep(4)  # let the cells argue and settle
    first = labels_at(page, stroke)
    time.sleep(1.5)
    second = labels_at(page, stroke)
    assert 255 not in first and 255 not in second
    majority = max(set(second), key=second.count)
    assert sum(a == b for a, b in zip(first, second)) >= 0.8 * len(stroke), (first, second)
    assert second.count(majority) >= 0.8 * len(stroke), second  # the colour has settled on one class
    page.check("input[value=erase]")
    drag(page, stroke)
    page.wait_for_function("(cells) => cells.every(([y, x]) => window.fastca.label[y * window.fastca.width + x] === 255)",
                           arg=[list(c) for c in stroke], timeout=20000)
    assert page.evaluate("window.fastca.errors.length") == 0
    page.close()


def test_the_growing_model_renders_grows_from_a_click_and_is_cut(browser, server_url):
    page = open_page(browser, server_url)
    page.select_option("#model", "growing-gecko")
    page.wait_for_function("window.fastca.kind === 'growing' && window.fastca.rgba && window.fastca.frames > 3",
                           timeout=30000)
    assert page.locator("input[value=seed]").is_checked() and not page.locator("#legend").is_visible()
    page.wait_for_function("""() => {  // the gecko growing from the middle: coloured, not white, pixels
        const c = document.getElementById('world'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 230 || d[i + 1] < 230 || d[i + 2] < 230) n++;
        return n > 40; }""", timeout=20000)
    alpha = "([y, x]) => window.fastca.rgba[4 * (y * window.fastca.width + x) + 3]"
    page.mouse.click(*canvas_point(page, 12, 12))  # a seed in a corner
    page.wait_for_function(f"({alpha})([12, 12]) > 0", timeout=20000)
    page.click("#pause")  # (so that the cut is seen before the gecko regrows it)
    page.wait_for_function("window.fastca.paused", timeout=20000)
    page.check("input[value=erase]")
    drag(page, [(8, 12), (16, 12)])  # the eraser cuts it (radius 6)
    page.wait_for_function(f"[[10, 12], [12, 12], [14, 12]].every((c) => ({alpha})(c) === 0)", timeout=20000)
    assert page.evaluate("window.fastca.errors.length") == 0
    page.close()


@pytest.fixture(scope="module")
def small_server_url():
    """A second server: another origin for the first, and one that serves a single tab."""
    from fastca.play import start_in_thread

    url, stop = start_in_thread(size=28, backend="numba-cpu", max_sessions=1)
    yield url
    stop()


def test_a_full_server_tells_the_page_why_and_a_closed_tab_frees_its_place(browser, small_server_url):
    first = open_page(browser, small_server_url)
    second = browser.new_page()
    second.goto(small_server_url)
    second.wait_for_function("window.fastca && window.fastca.refused", timeout=20000)
    time.sleep(1)  # the server has closed the session by now: the reason stays on screen
    assert "at most 1" in second.locator("#error").inner_text()
    assert second.evaluate("window.fastca.frames") == 0
    first.close()
    time.sleep(0.5)
    second.reload()
    second.wait_for_function("window.fastca && window.fastca.frames > 3", timeout=60000)
    second.close()


def test_another_site_and_a_rebound_name_cannot_drive_the_server(browser, server_url, small_server_url):
    page = browser.new_page()
    page.goto(small_server_url)  # another origin (another port) opens a websocket to the first server
    result = page.evaluate("""(url) => new Promise((resolve) => {
        const ws = new WebSocket(url);
        let messages = 0;
        ws.onmessage = () => { messages++; };
        ws.onclose = (ev) => resolve({ messages, code: ev.code });
        setTimeout(() => resolve({ messages, code: "still open" }), 10000);
    })""", server_url.replace("http://", "ws://") + "ws")
    assert result == {"messages": 0, "code": 1006}, result  # refused before the upgrade
    port = server_url.rsplit(":", 1)[1].strip("/")
    response = page.goto(f"http://evil.example:{port}/")  # same-origin with itself, Host names no server name
    assert response.status == 403
    page.close()
