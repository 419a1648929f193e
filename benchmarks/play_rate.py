"""Frame rate of `fastca play`: frames per second at one step per frame, per world size.

    python -m benchmarks.play_rate --sizes 56,256,512,1024 --seconds 10 [--browser]
    python -m benchmarks.play_rate --model growing-gecko --sizes 96,256,512,1024 [--browser]

(56: the digits' default world; 96: the growing model's.) The first line says the machine: CPU model, family and model number
from /proc/cpuinfo, cores, and with ``--browser`` the Chromium version.

Runs the play server in this process on a free port and either a protocol client that
acknowledges every frame at once (the server's own rate) or, with ``--browser``, the real
page in headless Chromium (decoding and drawing every frame too), and counts frames and
steps over ``seconds`` after a warm-up.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import time

from fastca.play import start_in_thread


async def protocol_rate(url, seconds, warmup=3.0):
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(url + "ws") as ws:
        frames, t0, first_step, last_step = 0, None, None, None
        start = time.perf_counter()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            await ws.send_str('{"type": "ack"}')
            step = int.from_bytes(msg.data[4:8], "little")
            now = time.perf_counter()
            if t0 is None and now - start > warmup:
                t0, first_step = now, step
            elif t0 is not None:
                frames += 1
                last_step = step
                if now - t0 > seconds:
                    return frames / (now - t0), (last_step - first_step) / (now - t0)


def browser_rate(url, seconds):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1100, "height": 760})
        page.goto(url)
        page.wait_for_function("window.fastca && window.fastca.frames > 3", timeout=120000)
        time.sleep(3)
        f0, s0, t0 = page.evaluate("[window.fastca.frames, window.fastca.step, performance.now()]")
        time.sleep(seconds)
        f1, s1, t1 = page.evaluate("[window.fastca.frames, window.fastca.step, performance.now()]")
        b.close()
    dt = (t1 - t0) / 1000
    return (f1 - f0) / dt, (s1 - s0) / dt


def machine(browser=False):
    """The machine a number was measured on: CPU model, family and model (/proc/cpuinfo), cores."""
    from benchmarks.machine import cpuinfo

    info = cpuinfo()
    out = {"cpu": info.get("model name"), "family": info.get("cpu family"), "model": info.get("model"),
           "cores": os.cpu_count()}
    if browser:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        out["chromium"] = subprocess.run([chromium, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="56,256,512,1024")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model", default="fastca-mnist", help="a model of fastca.play.MODELS (e.g. growing-gecko)")
    parser.add_argument("--browser", action="store_true", help="measure in headless Chromium (the real page)")
    args = parser.parse_args(argv)
    print(json.dumps({"machine": machine(args.browser)}), flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        url, stop = start_in_thread(size=size, model=args.model, backend=args.backend)
        if args.browser:
            fps, sps = browser_rate(url, args.seconds)
        else:
            fps, sps = asyncio.run(protocol_rate(url, args.seconds))
        print(json.dumps({"model": args.model, "size": size, "client": "chromium" if args.browser else "protocol",
                          "frames_per_s": round(fps, 1), "steps_per_s": round(sps, 1)}), flush=True)
        stop()


if __name__ == "__main__":
    main()
