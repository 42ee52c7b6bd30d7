"""`wasmlattice dev` on the python-http template: the time from saving `app.py` to the first new
response, beside the componentize-py build alone, in the same run.

Run: `python benchmarks/dev_loop.py [ROUNDS]`. A `wasmlattice new hello` project in a temporary
folder is served by `wasmlattice dev`; each round edits the greeting and polls the URL until the
new one answers (every answer in between must be 200: a failed request is reported). Then, with
`dev` stopped, each round edits and times `build_project` alone (componentize-py). The issue's
target (issue 16) is a new response within 15 s of the save.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, free_port, machine
from wasmlattice.project.build import build_project

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
CLI = [sys.executable, "-m", "wasmlattice.cli.main"]


def main() -> None:
    """Measure save-to-new-response under `dev` and the build alone; print both."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "hello"
        subprocess.run(
            [*CLI, "new", "hello", "--path", str(project)], check=True, env=env, capture_output=True
        )
        port = free_port()
        manifest = project / "wadm.yaml"
        manifest.write_text(manifest.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
        app = project / "app.py"
        source = app.read_text()
        proc = subprocess.Popen(
            [*CLI, "dev", "--path", str(project)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        lines: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: lines.extend(stream), daemon=True).start()
        reloads: list[float] = []
        reported: list[tuple[float, ...]] = []
        failures = 0
        try:
            deadline = time.monotonic() + 600
            while not any("serving:" in ln for ln in lines):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("dev did not start:\n" + "".join(lines))
                time.sleep(0.2)
            url = f"http://127.0.0.1:{port}/"
            for i in range(ROUNDS):
                want = f"round{i} from hello".encode()
                saved = time.monotonic()
                app.write_text(source.replace("hello from", f"round{i} from"))
                while time.monotonic() - saved < 120:
                    try:
                        with urllib.request.urlopen(url, timeout=30) as resp:
                            if resp.read().startswith(want):
                                break
                    except Exception:
                        failures += 1
                    time.sleep(0.05)
                reloads.append(time.monotonic() - saved)
                time.sleep(2)  # let dev print its own figure
            pattern = r"reloaded in ([\d.]+) s \(from the save; build ([\d.]+) s, swap ([\d.]+) s"
            reported = [tuple(float(x) for x in m) for m in re.findall(pattern, "".join(lines))]
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        builds = []
        for i in range(ROUNDS):
            app.write_text(source.replace("hello from", f"alone{i} from"))
            builds.append(build_project(project).seconds)
    print(machine())
    print(f"rounds: {ROUNDS}; failed requests during reloads: {failures}")
    each = [round(x, 1) for x in reloads]
    print(f"save to new response under dev: median {statistics.median(reloads):.1f} s {each}")
    print(f"dev's own 'reloaded in' (save to swapped; build; swap): {reported}")
    each = [round(x, 1) for x in builds]
    print(f"componentize-py build alone: median {statistics.median(builds):.1f} s {each}")


if __name__ == "__main__":
    main()
