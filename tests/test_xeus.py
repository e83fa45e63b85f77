"""%%parallel in a real xeus-python kernel (the PyPI wheel's "xpython" kernelspec), through jupyter_client."""

import importlib.util
import json
import platform
import re
import sys
import threading
import time
from pathlib import Path

import pytest
from packaging.tags import sys_tags

from helpers import assert_output_streams_while_the_cell_runs, execute, start_kernel

KERNELS = Path(sys.prefix) / "share" / "jupyter" / "kernels"  # where the wheel puts "xpython"

# xeus-python 0.19.0 is published as wheels only (no sdist): CPython 3.9-3.14, GIL builds, on these
# platforms. Where none fits, pip cannot install it and there is nothing to test; everywhere else the
# Makefile installs it, so a missing package is a broken setup and must fail, not skip.
_WHEEL_PLATFORMS = {
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
    "macosx_15_0_arm64",
    "macosx_15_0_x86_64",
    "win_amd64",
}
_WHEEL_ABIS = {f"cp3{minor}" for minor in range(9, 15)}


def _wheel_fits() -> bool:
    return any(t.interpreter == t.abi and t.abi in _WHEEL_ABIS and t.platform in _WHEEL_PLATFORMS for t in sys_tags())


if not _wheel_fits():
    pytest.skip(
        f"no xeus-python wheel on PyPI for CPython {sys.version.split()[0]} "
        f"({'free-threaded, ' if 't' in getattr(sys, 'abiflags', '') else ''}{sys.platform} "
        f"{platform.machine()}); it cannot be installed here",
        allow_module_level=True,
    )

# Found, not imported: the extension module belongs in the kernel process, not in pytest's.
if importlib.util.find_spec("xpython") is None:
    _MISSING = "xeus-python is not installed: pip install xeus-python==0.19.0"
elif not (KERNELS / "xpython" / "kernel.json").is_file():
    _MISSING = f"no xpython kernelspec in {KERNELS}"
else:
    _MISSING = None


@pytest.fixture(autouse=True)
def _xeus_installed():
    if _MISSING:
        pytest.fail(f"{_MISSING} (a wheel exists for this Python)", pytrace=False)


@pytest.fixture(scope="module")
def xkernel(tmp_path_factory):
    log = open(tmp_path_factory.mktemp("xeus") / "kernel.log", "w")
    km, kc = start_kernel("xpython", [KERNELS], log)
    reply, _ = execute(kc, "%load_ext ipy_parallel")
    assert reply["status"] == "ok", reply
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)
    log.close()


def _ename(reply) -> str:
    # xeus-python reports every ename as str(type), "<class 'ipy_parallel.exceptions.ParallelTimeout'>", where
    # ipykernel sends "ParallelTimeout"; compare the bare names.
    return re.sub(r"^<class '(?:[\w.]*\.)?(\w+)'>$", r"\1", reply["ename"])


def _streams(messages) -> dict[str, str]:
    # xeus sends one stream message per write(), so join before comparing
    got = [m["content"] for _, m in messages if m["msg_type"] == "stream"]
    return {name: "".join(c["text"] for c in got if c["name"] == name) for name in ("stdout", "stderr")}


def _results(messages) -> list[str]:
    return [m["content"]["data"]["text/plain"] for _, m in messages if m["msg_type"] == "execute_result"]


def test_the_wheel_installs_a_kernelspec_that_runs_this_python(xkernel):
    spec = json.loads((KERNELS / "xpython" / "kernel.json").read_text())
    # "python3.13" is swapped for sys.executable by jupyter_client, so the kernel sees this venv's packages;
    # no interrupt_mode means "signal": the stop button sends SIGINT (see the interrupt test below).
    assert spec["argv"][:3] == [f"python{sys.version_info[0]}.{sys.version_info[1]}", "-m", "xpython_launcher"]
    assert "interrupt_mode" not in spec
    reply, messages = execute(xkernel, "import sys; print(sys.executable); print(type(get_ipython()).__name__)")
    assert reply["status"] == "ok"
    assert _streams(messages)["stdout"].split() == [sys.executable, "XPythonShell"]


def test_workers_output_ids_and_results(xkernel):
    reply, messages = execute(xkernel, "%%parallel 2 --no-monitor\nprint('hi', worker_id, n_workers)\nworker_id * 7")
    assert reply["status"] == "ok"
    assert sorted(_streams(messages)["stdout"].splitlines()) == ["[0] hi 0 2", "[1] hi 1 2"]
    assert _results(messages) == ["[0, 7]"]


def test_worker_output_streams_while_the_cell_runs(xkernel):
    assert_output_streams_while_the_cell_runs(xkernel)


def test_push_and_pull(xkernel):
    assert execute(xkernel, "n = 10")[0]["status"] == "ok"
    reply, _ = execute(xkernel, "%%parallel 2 --push n --pull y --no-monitor\ny = n + worker_id")
    assert reply["status"] == "ok"
    reply, messages = execute(xkernel, "y")
    assert _results(messages) == ["[10, 11]"]


def test_a_failing_worker_is_an_error_reply_with_the_workers_traceback(xkernel):
    reply, messages = execute(xkernel, "%%parallel 2\n{}['missing']")
    assert reply["status"] == "error"
    assert reply["ename"] == "<class 'ipy_parallel.exceptions.ParallelError'>"  # xeus's spelling, see _ename
    shown = "\n".join(reply["traceback"])
    count = next(m["content"]["execution_count"] for _, m in messages if m["msg_type"] == "execute_input")
    # one traceback for both workers, pointing at this cell's line (the cell number comes from history)
    assert "[workers 0-1] Traceback" in shown and f'File "<parallel In[{count}]>", line 1' in shown
    assert shown.count("KeyError: 'missing'") == 1
    assert len([m for _, m in messages if m["msg_type"] == "error"]) == 1
    assert execute(xkernel, "%%parallel 2\nworker_id")[0]["status"] == "ok"


def test_live_display_updates_in_place(xkernel):
    # make_monitor knows XPythonShell: without that the cell would only print the summary at the end
    code = "%%parallel 2\nimport time\nt = time.time()\nwhile time.time() - t < 2.0:\n    pass"
    reply, messages = execute(xkernel, code)
    assert reply["status"] == "ok"
    shown = [m for _, m in messages if m["msg_type"] == "display_data"]
    updates = [m for _, m in messages if m["msg_type"] == "update_display_data"]
    assert len(shown) == 1, "one display, created once"
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert all(m["content"]["transient"]["display_id"] == display_id for m in updates)
    live = [
        m
        for m in updates
        if "CPU of" in m["content"]["data"]["text/plain"] and "%%parallel ·" in m["content"]["data"]["text/plain"]
    ]
    assert len(live) >= 4, f"only {len(live)} live updates in a 2 s cell"
    assert updates[-1]["content"]["data"]["text/plain"].startswith("%%parallel: 2 workers,")
    assert not _streams(messages)["stdout"], "the summary replaces the display instead of being printed"


def test_timeout_stops_the_workers(xkernel):
    # the way to bound a cell here, since the stop button kills xeus-python (below)
    start = time.monotonic()
    reply, _ = execute(xkernel, "%%parallel 2 --timeout 1\nwhile True:\n    pass")
    seconds = time.monotonic() - start
    print(f"xeus-python --timeout 1: cell failed after {seconds:.2f} s")
    assert reply["status"] == "error" and _ename(reply) == "ParallelTimeout"
    assert "stopped workers 0-1" in "\n".join(reply["traceback"])
    assert seconds < 3
    reply, messages = execute(xkernel, "%%parallel 2\nworker_id")
    assert reply["status"] == "ok" and _results(messages) == ["[0, 1]"]


BUSY = {
    "plain Python": "x = 1\nimport time\nt = time.time()\nwhile time.time() - t < 4:\n    pass",
    "%%parallel": "x = 1\n%load_ext ipy_parallel\n",  # then the loop below, in the workers
}


@pytest.mark.parametrize("what", BUSY, ids=BUSY.keys())
def test_interrupt_kills_the_kernel(what, tmp_path):
    # xeus-python 0.19.0 exits on SIGINT (jupyter-xeus/xeus-python#527), with or without our workers
    # running: the cell gets no reply, the kernel process ends with status 0, the notebook restarts it
    # and every variable is lost. Our pool is not involved; the plain-Python case proves it.
    with open(tmp_path / "kernel.log", "w+") as log:
        km, kc = start_kernel("xpython", [KERNELS], log)
        try:
            if what == "%%parallel":
                assert execute(kc, BUSY[what])[0]["status"] == "ok"
                msg_id = kc.execute("%%parallel 2\nimport time\nt = time.time()\nwhile time.time() - t < 4:\n    pass")
            else:
                msg_id = kc.execute(BUSY[what])
            time.sleep(1.0)
            process = km.provisioner.process
            start = time.monotonic()
            km.interrupt_kernel()
            while km.is_alive() and time.monotonic() - start < 5:
                time.sleep(0.05)
            seconds = time.monotonic() - start
            print(f"xeus-python, SIGINT during {what}: kernel exited after {seconds:.2f} s, status {process.poll()}")
            assert not km.is_alive() and process.poll() == 0
            replies = []
            while True:
                try:
                    replies.append(kc.get_shell_msg(timeout=0.5))
                except Exception:  # queue.Empty: nothing more came
                    break
            assert not [r for r in replies if r["parent_header"].get("msg_id") == msg_id], "the cell got a reply"
            log.seek(0)
            assert "Fatal Python error" not in log.read()

            km.restart_kernel(now=True)  # what the notebook does next
            kc.wait_for_ready(timeout=60)
            reply, _ = execute(kc, "x")
            assert reply["status"] == "error" and _ename(reply) == "NameError", "state survived the restart?"
            assert execute(kc, "%load_ext ipy_parallel")[0]["status"] == "ok"
            reply, messages = execute(kc, "%%parallel 2\nworker_id")
            assert reply["status"] == "ok" and _results(messages) == ["[0, 1]"]
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def test_message_mode_interrupt_is_ignored(tmp_path):
    # With "interrupt_mode": "message" in the kernelspec the kernel survives the stop button, but xeus-python
    # does not stop running code either: the %%parallel cell runs to its end and returns normally.
    spec = json.loads((KERNELS / "xpython" / "kernel.json").read_text())
    spec["interrupt_mode"] = "message"
    (tmp_path / "xpython-message").mkdir()
    (tmp_path / "xpython-message" / "kernel.json").write_text(json.dumps(spec))
    with open(tmp_path / "kernel.log", "w") as log:
        km, kc = start_kernel("xpython-message", [tmp_path], log)
    try:
        assert km.kernel_spec.interrupt_mode == "message"
        assert execute(kc, "%load_ext ipy_parallel")[0]["status"] == "ok"
        timer = threading.Timer(1.0, km.interrupt_kernel)
        timer.start()
        start = time.monotonic()
        reply, messages = execute(
            kc, "%%parallel 2 --no-monitor\nimport time\nt = time.time()\nwhile time.time() - t < 3:\n    pass\n'done'"
        )
        seconds = time.monotonic() - start
        timer.join()
        print(f"xeus-python, interrupt_request during a 3 s %%parallel cell: it ended normally after {seconds:.2f} s")
        assert reply["status"] == "ok" and _results(messages) == ["['done', 'done']"]
        assert seconds > 2.9 and km.is_alive()
        reply, messages = execute(kc, "%%parallel 2\nworker_id")
        assert reply["status"] == "ok" and _results(messages) == ["[0, 1]"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize("busy", [False, True], ids=["warm pool", "busy workers"])
def test_shutdown_is_clean(busy, tmp_path):
    # shutdown_kernel(now=False) asks politely and kills only after 5 s; a quick exit with status 0 and no
    # fatal error in the log means the kernel ended by itself with the pool alive (or still running).
    with open(tmp_path / "kernel.log", "w+") as log:
        km, kc = start_kernel("xpython", [KERNELS], log)
        assert execute(kc, "%load_ext ipy_parallel")[0]["status"] == "ok"
        reply, messages = execute(kc, "%%parallel 2\nworker_id")
        assert _results(messages) == ["[0, 1]"]
        if busy:
            kc.execute("%%parallel 2\nwhile True:\n    pass")
            time.sleep(1.0)
        process = km.provisioner.process
        start = time.monotonic()
        km.shutdown_kernel(now=False)
        seconds = time.monotonic() - start
        kc.stop_channels()
        print(
            f"xeus-python shutdown with {'busy workers' if busy else 'a warm pool'}: {seconds:.2f} s, "
            f"status {process.poll()}"
        )
        log.seek(0)
        text = log.read()
        assert process.poll() == 0 and seconds < 3
        assert "Fatal Python error" not in text and "Segmentation" not in text, text


def test_a_background_cell_keeps_its_values_but_xeus_drops_what_it_shows_later(xkernel):
    # Pinned, as the interrupt behaviour above: xeus-python 0.19.0 publishes nothing written from
    # another thread (the background run's output and display updates), in no cell; the run
    # itself, -o and %parallel_wait work.
    reply, messages = execute(
        xkernel, "%%parallel 2 --bg -o bg_values\nimport time\ntime.sleep(1)\nprint('late', worker_id)\nworker_id"
    )
    assert reply["status"] == "ok" and any("background run [" in r for r in _results(messages)), messages
    # No display that would stay frozen at its first frame.
    assert not [m for _, m in messages if m["msg_type"] == "display_data"], messages
    reply, messages = execute(xkernel, "import time\ntime.sleep(2)\n%parallel_wait\nprint('values', bg_values)")
    assert reply["status"] == "ok", reply
    seen = _streams(messages)["stdout"]
    assert "values [0, 1]" in seen, seen
    late = []
    while True:  # whatever else the kernel published meanwhile, under any parent
        try:
            late.append(xkernel.get_iopub_msg(timeout=1))
        except Exception:
            break
    shown = seen + "".join(str(m["content"]) for m in late)
    assert "late 0" not in shown and "late 1" not in shown, "xeus-python now shows a background run's output"
