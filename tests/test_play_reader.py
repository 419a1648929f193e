"""`fastca play` as a reader of the article meets it (issue 28), in a real headless Chromium:
a digit drawn at a natural size on the default world becomes one digit; a drawing far from the
MNIST scale is explained; the phone layout (390x844) with touch drawing and a tap probe; reset,
noise, damage, swap; reconnecting after the server restarts; the favicon; the legend.

Skipped, with the reason, when Playwright or the browser is missing (as tests/test_play_browser.py).
"""

import math
import os
import shutil
import socket
import time

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = os.environ.get("FASTCA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")

NATURAL = 0.4  #: a natural digit: this fraction of the world view's height (22 cells on the default 56x56 world)


@pytest.fixture(scope="module")
def server():
    """The default server (default world size) on a fixed port, so that it can be restarted."""
    from fastca.play import start_in_thread

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, stop = start_in_thread(backend="numba-cpu", port=port)
    box = {"url": url, "port": port, "stop": stop}
    yield box
    box["stop"]()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def open_page(browser, url, **context):
    ctx = browser.new_context(**({"viewport": {"width": 1100, "height": 760}} | context))
    page = ctx.new_page()
    page.statuses = []
    page.on("response", lambda r: page.statuses.append((r.status, r.url)))
    page.goto(url)
    page.wait_for_function("window.fastca && window.fastca.frames > 3", timeout=60000)
    return page


def cleared(page):
    page.click("#clear")
    page.wait_for_function("window.fastca.label && window.fastca.label.every((v) => v === 255)", timeout=20000)


def digit_path(digit, height):
    """The stroke of a hand-drawn ``digit`` ``height`` CSS px tall, as (dx, dy) offsets from its centre."""
    h = height
    if digit == 1:
        pts = [(0.08 * h, -0.5 * h), (-0.06 * h, 0.5 * h)]
    elif digit == 7:
        pts = [(-0.3 * h, -0.5 * h), (0.3 * h, -0.5 * h), (-0.08 * h, 0.5 * h)]
    else:  # 0: an oval, closed
        pts = [(0.32 * h * math.sin(t), -0.5 * h * math.cos(t)) for t in (2 * math.pi * i / 40 for i in range(41))]
    return pts


def stroke(page, points, steps=6):
    """A mouse stroke through page coordinates."""
    page.mouse.move(*points[0])
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*p, steps=steps)
    page.mouse.up()


def draw_digit(page, digit, fraction):
    box = page.locator("#world").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    stroke(page, [(cx + dx, cy + dy) for dx, dy in digit_path(digit, fraction * box["height"])])


def settled_probe(page, digit, timeout=30):
    """The page's probe once it reads ``digit`` with >= 90% agreement twice 1 s apart (or the last reading)."""
    t0, last = time.time(), None
    while time.time() - t0 < timeout:
        last = page.evaluate("window.fastca.probe")
        if last and last["digit"] == digit and last["agreement"] >= 0.9:
            time.sleep(1)
            again = page.evaluate("window.fastca.probe")
            if again and again["digit"] == digit and again["agreement"] >= 0.9:
                return again
        time.sleep(0.3)
    return last


@pytest.mark.parametrize("digit", [1, 7, 0])
def test_a_natural_stroke_on_the_default_world_becomes_one_digit(browser, server, digit):
    page = open_page(browser, server["url"])
    assert page.evaluate("[window.fastca.width, window.fastca.height]") == [56, 56]
    cleared(page)
    draw_digit(page, digit, NATURAL)
    probe = settled_probe(page, digit)
    assert probe and probe["digit"] == digit and probe["agreement"] >= 0.9, probe
    assert 14 <= probe["height"] <= 28, probe  # the MNIST scale, in cells
    page.wait_for_function("window.fastca.scale && window.fastca.scale.verdict === 'ok'", timeout=10000)
    assert "far larger" not in page.locator("#note").inner_text()
    page.context.close()


def test_a_drawing_far_outside_the_mnist_scale_is_explained(browser, server):
    page = open_page(browser, server["url"])
    page.select_option("#size", "128")
    page.wait_for_function("window.fastca.width === 128", timeout=30000)
    cleared(page)
    draw_digit(page, 7, 0.7)  # ~90 cells tall: what broke on the old 256x256 default
    page.wait_for_function("window.fastca.scale && window.fastca.scale.verdict === 'too big'", timeout=20000)
    note = page.locator("#note").inner_text()
    assert "far larger" in note and "MNIST" in note and "dashed square" in note, note
    page.context.close()


def touch(page, cdp, kind, x, y):
    cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [] if kind == "touchEnd" else
                                          [{"x": x, "y": y, "id": 1, "radiusX": 4, "radiusY": 4, "force": 1}]})


def test_the_phone_layout_draws_by_touch_and_probes_by_tap(browser, server, tmp_path):
    page = open_page(browser, server["url"], viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    world = page.locator("#world").bounding_box()
    panel = page.locator("#panel").bounding_box()
    assert world["width"] >= 300 and world["x"] >= 0 and world["x"] + world["width"] <= 390, world
    assert panel["y"] >= world["y"] + world["height"] - 1, (world, panel)  # the controls under the world
    assert page.locator("#probe").bounding_box()["y"] < 844  # the readout is on the first screen
    cleared(page)
    cdp = page.context.new_cdp_session(page)
    cx, cy = world["x"] + world["width"] / 2, world["y"] + world["height"] / 2
    points = [(cx + dx, cy + dy) for dx, dy in digit_path(1, NATURAL * world["height"])]
    (x0, y0), (x1, y1) = points
    touch(page, cdp, "touchStart", x0, y0)
    for i in range(1, 21):
        touch(page, cdp, "touchMove", x0 + (x1 - x0) * i / 20, y0 + (y1 - y0) * i / 20)
        time.sleep(0.02)
    touch(page, cdp, "touchEnd", x1, y1)
    page.wait_for_function("window.fastca.label.some((v) => v !== 255)", timeout=20000)
    probe = settled_probe(page, 1)
    assert probe and probe["digit"] == 1 and probe["agreement"] >= 0.9, probe
    page.tap("input[value=probe]")
    page.evaluate("window.fastca.probeAt = null; window.fastca.probe = null")
    page.touchscreen.tap(cx, cy)  # a tap on the drawn 1 reads it
    page.wait_for_function("window.fastca.probe && window.fastca.probe.digit === 1", timeout=10000)
    assert "digit 1" in page.locator("#probe").inner_text()
    page.screenshot(path=str(tmp_path / "narrow.png"))
    page.context.close()


def labels(page):
    return page.evaluate("Array.from(window.fastca.label)")


def test_reset_noise_damage_and_swap(browser, server):
    page = open_page(browser, server["url"])
    cleared(page)
    page.click("#reset")  # new random test digits
    page.wait_for_function("window.fastca.label.filter((v) => v !== 255).length > 300", timeout=20000)
    page.click("#pause")
    page.wait_for_function("window.fastca.paused", timeout=10000)
    before = labels(page)
    alive = [i for i, v in enumerate(before) if v != 255]
    page.evaluate("document.getElementById('amount').value = 3")
    page.click("#noise")
    page.wait_for_function("window.fastca.infos.some((t) => t.startsWith('noise'))", timeout=20000)
    time.sleep(0.5)
    after = labels(page)
    assert [i for i, v in enumerate(after) if v != 255] == alive  # noise changes the state, not the digits
    changed = sum(before[i] != after[i] for i in alive)
    assert changed > 0.2 * len(alive), (changed, len(alive))  # strong noise scrambles many votes
    page.check("input[value=damage]")
    box = page.locator("#world").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 4, box["y"] + box["height"] / 4)
    page.wait_for_function("window.fastca.infos.some((t) => t.includes('forgot their state'))", timeout=20000)
    page.click("#pause")  # run again: the cells recover
    page.wait_for_function("!window.fastca.paused", timeout=10000)
    page.check("input[value=draw]")
    stroke(page, [(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.1),
                  (box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.4)])
    page.click("#mutate")
    page.wait_for_function("window.fastca.infos.some((t) => t.startsWith('swapped'))", timeout=20000)
    assert "kept the 1 square you drew in" in page.evaluate("window.fastca.infos.at(-1)")
    assert page.evaluate("window.fastca.errors.length") == 0
    page.context.close()


def test_presets_are_large_the_slider_reaches_the_limit_and_the_legend_names_pale_classes(browser, server):
    from fastca.play import MAX_STEPS_PER_FRAME

    page = open_page(browser, server["url"])
    assert page.get_attribute("#speed", "max") == str(MAX_STEPS_PER_FRAME)
    page.click("[data-preset=swing]")
    page.wait_for_function("window.fastca.width === 56", timeout=20000)
    legend = page.locator("#legend").inner_text()
    assert "grey" in legend and "pale pink" in legend  # named, not guessed from a pale swatch
    swatch = page.locator("#legend .chip[data-cls='7'] .sw")
    assert swatch.inner_text() == "7" and swatch.evaluate("(e) => getComputedStyle(e).borderTopWidth") != "0px"
    page.fill("#speed", str(MAX_STEPS_PER_FRAME))
    page.dispatch_event("#speed", "input")
    step0 = page.evaluate("window.fastca.step")
    time.sleep(2)
    assert page.evaluate("window.fastca.step") - step0 > 3 * MAX_STEPS_PER_FRAME
    assert not [s for s in page.statuses if s[0] >= 400], page.statuses  # the favicon too: no 404
    page.context.close()


def test_the_page_says_connecting_and_reconnects_after_a_server_restart(browser, server):
    from fastca.play import start_in_thread

    page = open_page(browser, server["url"])
    server["stop"]()
    page.wait_for_function("window.fastca.connection === 'disconnected'", timeout=20000)
    assert page.locator("#overlay").is_visible()
    assert "reconnecting" in page.locator("#overlay").inner_text()
    frames = page.evaluate("window.fastca.frames")
    time.sleep(2)  # down for a while (a few failed tries)
    server["url"], server["stop"] = start_in_thread(backend="numba-cpu", port=server["port"])
    page.wait_for_function(f"window.fastca.reconnects === 1 && window.fastca.frames > {frames + 3}", timeout=30000)
    assert not page.locator("#overlay").is_visible()
    assert "reconnected" in page.locator("#note").inner_text()
    page.context.close()
    # a new tab shows "connecting"/"starting" instead of a blank canvas until its first frame
    ctx = browser.new_context()
    fresh = ctx.new_page()
    fresh.goto(server["url"], wait_until="domcontentloaded")
    shown = fresh.evaluate("[window.fastca.connection, document.getElementById('overlay').hidden, "
                           "document.getElementById('overlaytext').textContent, window.fastca.frames]")
    assert shown[3] > 0 or (shown[0] in ("connecting", "starting") and not shown[1] and "..." in shown[2]), shown
    ctx.close()
