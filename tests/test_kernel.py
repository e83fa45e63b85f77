"""A real kernel from our kernelspec, through jupyter_client: streams, error status, live display."""

import json

import pytest

from conftest import REPO, execute

from ipy_parallel.kernel import kernel_spec


def streams(messages):
    return [(t, m["content"]["name"], m["content"]["text"]) for t, m in messages if m["msg_type"] == "stream"]


def test_kernelspec_file_matches_the_installer():
    assert json.loads((REPO / "kernel" / "ipy_parallel" / "kernel.json").read_text()) == kernel_spec("python")


def test_install_writes_a_spec_for_this_python(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "ipy_parallel.kernel", "install", "--prefix", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Installed kernelspec 'ipy_parallel'" in proc.stdout
    spec = json.loads((tmp_path / "share" / "jupyter" / "kernels" / "ipy_parallel" / "kernel.json").read_text())
    assert spec == kernel_spec(sys.executable)


def test_parallel_works_without_load_ext(kernel):
    reply, messages = execute(kernel, "%%parallel 2\nworker_id * 7")
    assert reply["status"] == "ok"
    results = [m["content"]["data"]["text/plain"] for _, m in messages if m["msg_type"] == "execute_result"]
    assert results == ["[0, 7]"]


def test_worker_output_streams_while_the_cell_runs(kernel):
    code = ("%%parallel 2 --no-monitor\nimport time, sys\nprint('early', worker_id, flush=True)\n"
            "print('warn', worker_id, file=sys.stderr)\ntime.sleep(1.5)\nprint('late', worker_id)")
    reply, messages = execute(kernel, code)
    assert reply["status"] == "ok"
    got = streams(messages)
    text = {name: "".join(t for _, n, t in got if n == name) for name in ("stdout", "stderr")}
    assert sorted(text["stdout"].splitlines()) == ["[0] early 0", "[0] late 0", "[1] early 1", "[1] late 1"]
    assert sorted(text["stderr"].splitlines()) == ["[0] warn 0", "[1] warn 1"]
    early = min(t for t, n, s in got if "early" in s)
    late = min(t for t, n, s in got if "late" in s)
    assert late - early > 1.0, "early output must reach the notebook while the workers still run"


def test_failing_cell_has_error_status(kernel):
    reply, messages = execute(kernel, "%%parallel 4\n{}['missing']")
    assert reply["status"] == "error" and reply["ename"] == "ParallelError"
    shown = "\n".join(reply["traceback"])
    assert "[workers 0-3] Traceback" in shown and shown.count("KeyError: 'missing'") == 1
    errors = [m for _, m in messages if m["msg_type"] == "error"]
    assert len(errors) == 1
    reply, _ = execute(kernel, "%%parallel 4\nworker_id")
    assert reply["status"] == "ok"


def test_usage_error_fails_the_cell(kernel):
    reply, _ = execute(kernel, "%%parallel 0\n1")
    assert reply["status"] == "error" and reply["ename"] == "UsageError"


def test_live_display_updates_during_a_two_second_cell(kernel):
    code = "%%parallel 2\nimport time\nt = time.time()\nwhile time.time() - t < 2.0:\n    pass"
    reply, messages = execute(kernel, code)
    assert reply["status"] == "ok"
    shown = [(t, m) for t, m in messages if m["msg_type"] == "display_data"]
    updates = [(t, m) for t, m in messages if m["msg_type"] == "update_display_data"]
    assert len(shown) == 1, "one display, created once"
    display_id = shown[0][1]["content"]["transient"]["display_id"]
    assert all(m["content"]["transient"]["display_id"] == display_id for _, m in updates)
    live = [m for t, m in updates if "CPU of" in m["content"]["data"]["text/plain"] and "%%parallel ·" in
            m["content"]["data"]["text/plain"]]
    assert len(live) >= 4, f"only {len(live)} live updates in a 2 s cell"
    final = updates[-1][1]["content"]["data"]["text/plain"]
    assert final.startswith("%%parallel: 2 workers,") and "s CPU" in final
    assert "text/html" in updates[-1][1]["content"]["data"]


@pytest.mark.parametrize("backend", ["subinterpreter", "process"])
def test_kernel_interrupt_stops_the_workers_once(kernel, backend):
    import threading

    from conftest import interrupt_kernel

    timer = threading.Timer(1.0, interrupt_kernel, (kernel,))
    timer.start()
    reply, messages = execute(kernel, f"%%parallel 2 --backend {backend}\nwhile True:\n    pass")
    timer.join()
    assert reply["status"] == "error" and reply["ename"] == "ParallelInterrupted"
    shown = "\n".join(reply["traceback"])
    assert shown.count("interrupted: stopped workers 0-1") == 1
    reply, messages = execute(kernel, f"%%parallel 2 --backend {backend}\nworker_id")
    assert reply["status"] == "ok"


def _busy_kernel():
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="ipy_parallel", kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[str(REPO / "kernel")]))
    km.start_kernel(cwd=str(REPO / "tests"))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    kc.execute("%%parallel 2\nwhile True:\n    pass")
    for _ in range(50):  # until the workers are busy
        msg = kc.get_iopub_msg(timeout=10)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "busy":
            break
    import time

    time.sleep(1.0)
    return km, kc


def test_shutdown_with_busy_workers(kernel):
    import time

    km, kc = _busy_kernel()
    start = time.monotonic()
    km.shutdown_kernel(now=False)
    seconds = time.monotonic() - start
    kc.stop_channels()
    print(f"shutdown with busy workers: {seconds:.2f} s")
    assert not km.is_alive() and seconds < 5


def test_restart_with_busy_workers(kernel):
    import time

    km, kc = _busy_kernel()
    start = time.monotonic()
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=30)
    seconds = time.monotonic() - start
    print(f"restart with busy workers: {seconds:.2f} s")
    reply, _ = execute(kc, "%%parallel 2\nworker_id")
    assert reply["status"] == "ok"
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    assert seconds < 5
