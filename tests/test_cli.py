"""The console entry point, end to end in a subprocess."""

import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "fastca", *args], capture_output=True, text=True, timeout=600)


def test_demo_runs_and_reports():
    p = run("demo", "--steps", "20", "--digits", "8")
    assert p.returncode == 0, p.stderr
    assert "accuracy %" in p.stdout and "distill-2020-published" in p.stdout
    rows = [line.split() for line in p.stdout.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert [int(r[0]) for r in rows][-1] == 20


def test_demo_bad_option_is_one_line_error():
    p = run("demo", "--digits", "0")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["fastca: error: --digits must be in 1..256, got 0"]
