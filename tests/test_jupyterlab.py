"""End to end in a real browser: JupyterLab runs notebooks/quickstart.ipynb and shows the live CPU display, a background cell's too."""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# Missing packages are a failure, not a skip: `make test` installs them.
import jupyterlab  # noqa: F401
import pytest
from helpers import REPO
from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright

CHROMIUM = Path(os.environ.get("IPP_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOT = REPO / "test-artifacts" / "jupyterlab-quickstart.png"
FAILURE_SCREENSHOT = SCREENSHOT.with_name("jupyterlab-quickstart-failure.png")
BACKGROUND_SCREENSHOT = SCREENSHOT.with_name("jupyterlab-background.png")
PROGRESS_SCREENSHOT = SCREENSHOT.with_name("jupyterlab-quickstart-progress.png")
# The machine may be 2 shared cores: every wait is generous, in milliseconds for Playwright.
START_TIMEOUT = 180  # seconds for JupyterLab to answer
UI_TIMEOUT = 180_000
RUN_TIMEOUT = 600_000

# JavaScript run in the page. The live display is <pre class="ipy-parallel-monitor"> (display.py's
# format_html); while a cell runs its header reads "%%parallel · 2 workers · 0.8 s · ...", the
# summary that replaces it reads "%%parallel: 2 workers, ...".
RECORD_MONITOR = """() => {
  // Every distinct text the monitor elements ever show, in order: a MutationObserver sees each
  // redraw as it lands, where polling from Python could miss a short cell's few frames.
  window.__ippSeen = [];
  const note = () => {
    for (const el of document.querySelectorAll('pre.ipy-parallel-monitor')) {
      const text = el.textContent;
      if (!window.__ippSeen.includes(text)) window.__ippSeen.push(text);
    }
  };
  new MutationObserver(note).observe(document.body, {childList: true, subtree: true, characterData: true});
  note();
}"""
LIVE = r"/^%%parallel · \d+ workers · /"
BACKGROUND_LIVE = r"^%%parallel --bg \[\d+\] · \d+ workers · "
# Each code cell's prompt and monitor text whenever either changes, with the time: when a cell
# finished, and what a background cell's display showed after that.
RECORD_TIMELINE = """() => {
  window.__ippTimeline = [];
  const last = new Map();
  const note = () => {
    document.querySelectorAll('.jp-Notebook .jp-CodeCell').forEach((cell, i) => {
      const prompt = (cell.querySelector('.jp-InputPrompt') || {}).textContent || '';
      const monitor = Array.from(cell.querySelectorAll('pre.ipy-parallel-monitor')).map(e => e.textContent).join('|');
      const key = prompt + '\\u0000' + monitor;
      if (last.get(i) !== key) {
        last.set(i, key);
        window.__ippTimeline.push({t: performance.now(), cell: i, prompt: prompt.trim(), monitor});
      }
    });
  };
  new MutationObserver(note).observe(document.body, {childList: true, subtree: true, characterData: true});
  note();
}"""
CELLS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell')).map(cell => ({
  prompt: (cell.querySelector('.jp-InputPrompt') || {}).textContent || '',
  outputs: Array.from(cell.querySelectorAll('.jp-OutputArea-output')).map(o => ({
    mime: o.getAttribute('data-mime-type') || '', text: o.textContent})),
}))"""


@pytest.fixture
def chromium() -> Path:
    """The chromium binary, installed with apt when we are root and it is missing; skips if that fails."""
    if CHROMIUM.exists():
        return CHROMIUM
    why = "not root, so apt-get cannot install it"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            proc = subprocess.run(
                "apt-get update -qq && apt-get install -y -qq chromium",
                shell=True,
                capture_output=True,
                text=True,
                timeout=1200,
            )
            why = (
                f"apt-get exited with {proc.returncode}: {proc.stderr.strip()[-500:]}"
                if proc.returncode
                else "apt-get installed chromium, but not at that path"
            )
        except subprocess.TimeoutExpired:
            why = "apt-get timed out"
    if CHROMIUM.exists():
        return CHROMIUM
    pytest.skip(f"chromium not found at {CHROMIUM} and could not be installed: {why}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every live process below pid (from /proc). Kernels run in sessions of their own, so a
    process-group kill would miss them if the server died without shutting them down."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.fixture
def jupyterlab_server(tmp_path, monkeypatch):
    """JupyterLab on 127.0.0.1 serving a copy of notebooks/, with the python3 and ipy_parallel
    kernelspecs of this venv; all of Jupyter's config, data and runtime state under tmp_path."""
    root = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", root)
    share = tmp_path / "prefix"
    # JUPYTER_PATH comes first in the kernelspec search, so a python3 spec elsewhere on this
    # machine (another Python's) cannot shadow the venv's; ipy_parallel is there as `make lab` has it.
    jupyter_path = share / "share" / "jupyter"
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))  # for the installers too (else they warn)
    from ipykernel.kernelspec import install as install_python3

    from ipy_parallel.kernel import install as install_ipy_parallel

    install_python3(prefix=str(share))
    install_ipy_parallel(prefix=str(share))
    config = tmp_path / "config"
    # No "get Jupyter news?" toast over the notebook (and so no news or update requests either):
    # a user setting, and the user-settings dir is under the temporary config dir.
    settings = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = dict(
        os.environ,
        JUPYTER_PATH=str(jupyter_path),
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        IPYTHONDIR=str(tmp_path / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    env.pop("JUPYTER_CONFIG_PATH", None)
    port, token = _free_port(), secrets.token_hex(16)
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log_path = tmp_path / "jupyterlab.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    kernels: set[int] = set()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert server.poll() is None, f"JupyterLab exited:\n{log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"JupyterLab did not answer:\n{log_path.read_text()}"
            time.sleep(0.5)
        yield {"base": base, "token": token, "root": root}
    finally:
        kernels.update(_descendants(server.pid))
        server.terminate()  # SIGTERM: the server shuts its kernels down, then exits
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
        for pid in kernels:  # whatever the server failed to stop
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@contextlib.contextmanager
def _browser(chromium: Path):
    args = ["--disable-dev-shm-usage", "--disable-gpu"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with sync_playwright() as p:
        # Not LD_PRELOAD: under `make sanitize` it holds the ASan runtime, which breaks chromium's
        # launcher script; the browser is not what that run checks.
        browser_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=args, env=browser_env)
        try:
            yield browser
        finally:
            browser.close()


def _open_and_run_all(page, lab, notebook: str, n_code: int) -> float:
    """Open the notebook in Lab, check its kernel started on its own with no cell run yet, start
    recording the monitors, and Run All Cells; returns the monotonic time of the click."""
    page.set_default_timeout(UI_TIMEOUT)
    page.goto(f"{lab['base']}/lab/tree/{notebook}?reset&token={lab['token']}", timeout=UI_TIMEOUT)
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-CodeCell").first.wait_for()
    # The kernel must have started on its own; a kernel picker (or any dialog) would block
    # Run All, so if we wait in vain, the dialog's text is the better error.
    try:
        page.locator(".jp-NotebookPanel-toolbar .jp-KernelName", has_text="Python 3 (ipykernel)").wait_for()
        page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for()
    finally:
        assert page.locator(".jp-Dialog").count() == 0, page.locator(".jp-Dialog").inner_text()
    # Lab attaches a long notebook's cells a few at a time after the first render.
    try:
        page.wait_for_function(f"() => ({CELLS})().length === {n_code}", timeout=UI_TIMEOUT)
    except PlaywrightTimeout:
        pass  # the assertion below says how many there were
    code_cells = page.evaluate(CELLS)
    assert len(code_cells) == n_code
    assert all(c["prompt"].strip() == "[ ]:" and not c["outputs"] for c in code_cells), code_cells

    page.evaluate(RECORD_MONITOR)
    page.evaluate(RECORD_TIMELINE)
    # Run > Run All Cells. The command is disabled (and a click on it does nothing) until
    # the notebook is Lab's current widget, which can lag its first render: click into the
    # notebook first and click the menu item only once it is enabled.
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-MarkdownCell").first.click()
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    run_all = page.locator(
        ".lm-Menu-item:not(.lm-mod-disabled)",
        has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")),
    )
    run_all.wait_for()
    start = time.monotonic()
    run_all.click()
    # Lab marks queued cells [*] at once, before the kernel sees anything.
    page.wait_for_function(f"() => ({CELLS})()[0].prompt.trim() !== '[ ]:'", timeout=60_000)
    return start


def _wait_until_all_ran(page) -> None:
    """Until every code cell shows an execution count and the kernel is idle again."""
    page.wait_for_function(
        f"() => ({CELLS})().every(c => /^\\[\\d+\\]:$/.test(c.prompt.trim())) && "
        "document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"idle\"]') !== null",
        timeout=RUN_TIMEOUT,
    )


def _failure_screenshot(page, path: Path) -> None:
    path.parent.mkdir(exist_ok=True)
    with contextlib.suppress(Exception):  # the test's own error matters more
        page.screenshot(path=str(path))
        print(f"screenshot of the failure: {path}")


def test_quickstart_runs_in_jupyterlab(chromium, jupyterlab_server):  # chromium first: a skip starts no server
    lab = jupyterlab_server
    nb = json.loads((lab["root"] / "quickstart.ipynb").read_text(encoding="utf-8"))
    # The notebook asks for "python3" and loads the extension itself (on the ipy_parallel kernel
    # that %load_ext would only print "already loaded"); this is the venv's python3, so no kernel picker.
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "".join(nb["cells"][1]["source"]).strip() == "%load_ext ipy_parallel"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    tagged = {i for i, c in enumerate(code) if "raises-exception" in c["metadata"].get("tags", [])}
    assert tagged == {len(code) - 1}, "the last cell, and only it, fails on purpose"

    background = next(i for i, c in enumerate(code) if "".join(c["source"]).startswith("%%parallel 2 --bg"))
    meanwhile = background + 1  # a plain cell that runs while the background cell's workers compute

    # Artifacts describe the last run only.
    for artifact in (SCREENSHOT, FAILURE_SCREENSHOT, BACKGROUND_SCREENSHOT, PROGRESS_SCREENSHOT):
        artifact.unlink(missing_ok=True)
    with _browser(chromium) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 2600})  # the whole notebook, outputs included
        try:
            start = _open_and_run_all(page, lab, "quickstart.ipynb", len(code))
            # The live display appears, then changes while the cell still runs (both frames are
            # live headers, which exist only until the summary replaces them).
            page.wait_for_function(f"() => window.__ippSeen.some(t => {LIVE}.test(t))", timeout=RUN_TIMEOUT)
            page.wait_for_function(
                f"() => window.__ippSeen.filter(t => {LIVE}.test(t)).length >= 2", timeout=RUN_TIMEOUT
            )
            print(f"\nthe live display appeared and changed by {time.monotonic() - start:.1f} s after Run All")
            # The main cell at work: its worker.progress() bars (for the README; the cell may have
            # ended meanwhile on a fast machine, which is no failure).
            progress = page.locator(".jp-CodeCell").filter(
                has=page.locator("pre.ipy-parallel-monitor", has_text="/25M ")
            )
            try:
                progress.first.screenshot(path=str(PROGRESS_SCREENSHOT), timeout=2000)
                print(f"screenshot of the progress bars: {PROGRESS_SCREENSHOT}")
            except Exception as exc:
                print(f"no screenshot of the progress bars: {exc}")

            # The background cell's display is live while the cell after it has already finished.
            page.wait_for_function(
                f"() => {{ const c = ({CELLS})(); return /^\\[\\d+\\]:$/.test(c[{meanwhile}].prompt.trim()) && "
                f"c[{background}].outputs.some(o => new RegExp({BACKGROUND_LIVE!r}).test(o.text) && "
                "/ · (0\\.[3-9]|[1-9]\\d*\\.\\d) s · /.test(o.text)); }",
                timeout=RUN_TIMEOUT,
            )
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(BACKGROUND_SCREENSHOT))
            print(f"screenshot of the background cell at work: {BACKGROUND_SCREENSHOT}")

            _wait_until_all_ran(page)
            print(f"all cells ran in {time.monotonic() - start:.1f} s")
            cells = page.evaluate(CELLS)
            timeline = page.evaluate("() => window.__ippTimeline")
            live = [t for t in page.evaluate("() => window.__ippSeen") if re.match(r"%%parallel · \d+ workers · ", t)]
            print(f"{len(live)} distinct live frames; the first two:\n" + "\n".join(live[:2]))
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            print(f"screenshot: {SCREENSHOT}")
            assert page.locator(".jp-Dialog").count() == 0, page.locator(".jp-Dialog").inner_text()
        except BaseException:
            _failure_screenshot(page, FAILURE_SCREENSHOT)
            raise

    # A bar per worker, of how far its worker.progress() has come: done/25M, rate and ETA. Not in
    # every frame: a frame may come before the worker's first reading (a CPU bar then), and one that
    # has finished shows done.
    progress = r"\[0\] .*\d+%\s+[\d.]+[kM]?/25M [\d.]+[kM]?/s ETA \d+:\d\d · +\d+% CPU"
    assert len([t for t in live if re.search(progress, t)]) >= 2, live
    counts = [int(re.search(r"\d+", c["prompt"]).group()) for c in cells]
    assert counts == list(range(1, len(code) + 1)), f"cells ran out of order or twice: {counts}"
    # Errors (and stderr) render as application/vnd.jupyter.stderr: only the tagged cell has any.
    failed = {
        i for i, c in enumerate(cells) if any(o["mime"] == "application/vnd.jupyter.stderr" for o in c["outputs"])
    }
    assert failed == tagged, [cells[i]["outputs"] for i in failed - tagged]
    error = "\n".join(o["text"] for o in cells[-1]["outputs"])
    assert "[workers 0-3]" in error and "ZeroDivisionError" in error, error
    text = "\n".join(o["text"] for c in cells for o in c["outputs"])
    assert "same answers: True" in text and "sum of squares: 333332833333500000 True" in text, text
    assert "[3] worker 3 of 4: 250000 numbers from 750000" in text, text
    # The live display of the long cell ended as its one-line summary.
    assert re.search(r"%%parallel: 2 workers, \d+\.\d\d s wall, .*% CPU of \d+% on \d+ cores, 50M items at ", text), (
        text
    )
    assert not any(re.match(r"%%parallel( --bg \[\d+\])? · ", o["text"]) for c in cells for o in c["outputs"]), (
        "a live display was left behind"
    )

    # The background cell: its display kept updating after the next cell had finished, in its own
    # output area, and ended as its summary; the cells after it saw its values.
    finished = min(e["t"] for e in timeline if e["cell"] == meanwhile and re.fullmatch(r"\[\d+\]:", e["prompt"]))
    frames = [
        e["monitor"]
        for e in timeline
        if e["cell"] == background and e["t"] > finished and re.match(BACKGROUND_LIVE, e["monitor"])
    ]
    print(f"{len(frames)} live frames of the background cell after the next cell had finished")
    assert len(frames) >= 2, [e for e in timeline if e["cell"] in (background, meanwhile)]
    summary = "\n".join(o["text"] for o in cells[background]["outputs"])
    assert re.search(r"✓\s*%%parallel --bg \[1\]: 2 workers, \d+\.\d\d s wall, ", summary), summary
    assert "background answers: True" in text and "meanwhile, this kernel is free" in text, text
    assert not any(
        re.search(BACKGROUND_LIVE, o["text"]) for i, c in enumerate(cells) if i != background for o in c["outputs"]
    ), "the background display leaked into another cell"


FREE_THREADING_SCREENSHOT = SCREENSHOT.with_name("jupyterlab-free-threading.png")
FREE_THREADING_LIVE_SCREENSHOT = SCREENSHOT.with_name("jupyterlab-free-threading-live.png")


def test_free_threading_notebook_runs_in_jupyterlab(chromium, jupyterlab_server):
    """numpy in parallel on the threads backend, its live display, and the run's timeline, in a
    browser. On 3.14t the threads run at once; with a GIL the display says they take turns. The
    README's screenshot is this test's, on 3.14t."""
    lab = jupyterlab_server
    nb = json.loads((lab["root"] / "free_threading.ipynb").read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    FREE_THREADING_SCREENSHOT.unlink(missing_ok=True)
    FREE_THREADING_LIVE_SCREENSHOT.unlink(missing_ok=True)
    failure = FREE_THREADING_SCREENSHOT.with_name("jupyterlab-free-threading-failure.png")
    threads_live = r"/^%%parallel \[threads[^\]]*\] · 2 workers · /"
    with _browser(chromium) as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 1500})
        try:
            _open_and_run_all(page, lab, "free_threading.ipynb", len(code))
            page.wait_for_function(
                f"() => window.__ippSeen.filter(t => {threads_live}.test(t)).length >= 2 && "
                "Array.from(document.querySelectorAll('pre.ipy-parallel-monitor'))"
                f".some(e => {threads_live}.test(e.textContent))",
                timeout=RUN_TIMEOUT,
            )
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(FREE_THREADING_LIVE_SCREENSHOT))  # the numpy cell at work (unless it just ended)
            _wait_until_all_ran(page)
            page.locator("svg.ipy-parallel-timeline").wait_for()  # one: the last run's
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(FREE_THREADING_SCREENSHOT))
            print(f"\nscreenshot: {FREE_THREADING_SCREENSHOT}")
            cells = page.evaluate(CELLS)
            live = [t for t in page.evaluate("() => window.__ippSeen") if re.match(threads_live[2:-1], t)]
        except BaseException:
            _failure_screenshot(page, failure)
            raise
    text = "\n".join(o["text"] for c in cells for o in c["outputs"])
    gil = "GIL enabled: True" in text
    assert re.search(r"\[0\] .*%\s+\d+\.\d\d s CPU", live[0]), live[0]  # a bar per worker
    assert ("take turns" in live[0]) == gil, live[0]
    assert "[0] worker 0 of 2: " in text and "[1] worker 1 of 2: " in text, text
    assert re.search(r"timeline: 2 workers, [\d.]+ s wall, [\d.]+ s CPU: efficiency \d+% of \d cores?", text), text
    assert "the kernel sees: [1. 2.] at the same address: True" in text, text
    assert not any(o["mime"] == "application/vnd.jupyter.stderr" for c in cells for o in c["outputs"]), text
