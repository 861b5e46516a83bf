"""What the dashboard costs orchestratord at idle: its CPU time (utime + stime from
/proc/PID/stat) over N seconds with no page open, then over N seconds with the overview open in
headless Chromium, on an idle real stack (one SmolLM2 worker). Prints both as % of one core.

usage: python dashboard_idle_cpu.py [SECONDS]   (through scripts/test-dashboard.sh measure-idle)
"""

import os
import shutil
import sys
import time

from playwright.sync_api import sync_playwright

from stack import Stack

TOKEN = "dashboard-idle-token-0123456789"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pid, seconds):
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    stack = Stack(token=TOKEN, worker_id="idle-worker").start()
    try:
        pid = stack.orch.pid
        time.sleep(3)
        closed = measure(pid, seconds)
        exe = os.environ.get("LLORCH_CHROMIUM") or shutil.which("chromium")
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=exe, headless=True, args=["--disable-gpu"])
            page = b.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{stack.base}/ui")
            page.fill("#login-token", TOKEN)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#conn.live")
            time.sleep(3)
            opened = measure(pid, seconds)
            b.close()
        print(f"orchestratord CPU at idle over {seconds:.0f} s: page closed {closed:.3f} %, "
              f"page open {opened:.3f} % (of one core; difference {opened - closed:+.3f} points)")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
