"""Background cells (%%parallel --bg), %parallel_wait and %parallel_stop: in an in-process shell and in a real kernel."""

import re
import time

import pytest
from IPython.core.error import UsageError

from helpers import bound, ctrl_c_after, execute, interrupt_kernel, magics_of, terminal_ipython, terminal_text

from ipy_parallel.exceptions import ParallelError, ParallelInterrupted, ParallelTimeout

SPIN = "import time\nend = time.monotonic() + {}\nwhile time.monotonic() < end: pass\n"  # busy Python code
# Workers that take a while without the CPU: on a slow shared machine the test's own steps still
# fit inside (the durations are scaled by bound()).
SLEEP = "import time\ntime.sleep({:g})\n"


def bg(ip, line, body):
    return ip.run_cell_magic("parallel", f"{line} --bg", body)


def test_returns_at_once_and_gives_the_values(ip):
    started = time.monotonic()
    job = bg(ip, "2", SLEEP.format(bound(1)) + "worker_id * 3")
    assert time.monotonic() - started < bound(0.5), "a --bg cell must return before its workers end"
    assert not job.done() and job.state == "running"
    assert "running" in repr(job) and ".result()" in repr(job)
    assert job.wait(bound(10))
    assert job.done() and job.state == "done"
    assert job.result() == [0, 3]


def test_out_and_pull_happen_when_the_run_ends(ip):
    job = bg(ip, "2 -o values --pull total", SLEEP.format(bound(1)) + "total = worker_id + 10\nworker_id")
    assert "values" not in ip.user_ns and "total" not in ip.user_ns
    assert job.result(bound(10)) is None
    assert ip.user_ns["values"] == [0, 1]
    assert ip.user_ns["total"] == [10, 11]


def test_the_session_goes_on_while_it_runs(ip):
    job = bg(ip, "2", SLEEP.format(bound(2)) + "worker_id")
    # The main interpreter is free: plain cells run, and another backend's pool too.
    assert ip.run_cell("sum(range(1000))").result == 499500
    assert not job.done()
    assert job.result(bound(10)) == [0, 1]


def test_a_busy_pool_says_so_at_once(ip):
    job = bg(ip, "2", SLEEP.format(bound(2)))
    started = time.monotonic()
    with pytest.raises(UsageError, match=r"busy with background run \[1\].*%parallel_wait.*--wait"):
        ip.run_cell_magic("parallel", "2", "worker_id")
    with pytest.raises(UsageError, match="busy with background run"):
        ip.run_line_magic("parallel", "worker_id")
    with pytest.raises(UsageError, match="busy with background run"):
        ip.run_cell_magic("parallel", "3", "worker_id")  # another size: never resized under the run
    with pytest.raises(UsageError, match="busy with background run"):
        ip.run_line_magic("parallel_reset", "")
    assert time.monotonic() - started < bound(0.5)
    assert not job.done()
    assert job.result(bound(10)) is None  # the run was not disturbed
    assert ip.run_cell_magic("parallel", "2", "worker_id") == [0, 1]


def test_wait_option_waits_for_the_background_run(ip):
    job = bg(ip, "2", SLEEP.format(bound(1)) + "x = 7")
    assert ip.run_cell_magic("parallel", "2 --wait", "x + worker_id") == [7, 8]
    assert job.done()


def test_errors_are_kept_for_result_and_shown_in_the_cell(ip, capsys):
    job = bg(ip, "2", SLEEP.format(bound(1)) + "1 / worker_id")
    assert job.wait(bound(10))
    assert job.state == "failed"
    with pytest.raises(ParallelError, match="1 of 2 workers raised"):
        job.result()
    err = capsys.readouterr().err
    assert "failed" in err and "ZeroDivisionError" in err


def test_stop_interrupts_the_run_and_the_pool_stays_usable(ip):
    job = bg(ip, "2", SPIN.format(60))
    time.sleep(0.2)
    started = time.monotonic()
    job.stop()
    assert time.monotonic() - started < bound(2)
    assert job.state == "stopped"
    with pytest.raises(ParallelInterrupted, match="was stopped"):
        job.result()
    assert ip.run_cell_magic("parallel", "2", "worker_id") == [0, 1]


def test_parallel_stop_and_wait_magics(ip, capsys):
    first = bg(ip, "2", SPIN.format(60))
    ip.run_line_magic("parallel_stop", "1")
    assert first.state == "stopped"
    with pytest.raises(UsageError, match="there is no background run 5"):
        ip.run_line_magic("parallel_stop", "5")
    second = bg(ip, "2", SLEEP.format(bound(1)) + "worker_id")
    capsys.readouterr()
    ip.run_line_magic("parallel_wait", "")
    assert second.done()
    out = capsys.readouterr().out
    assert "background run [2]" in out and "done" in out
    ip.run_line_magic("parallel_wait", "")
    assert "no background run is going on" in capsys.readouterr().out
    ip.run_line_magic("parallel_status", "")
    status = capsys.readouterr().out
    assert "background run [1]" in status and "stopped" in status and "background run [2]" in status


def test_parallel_wait_timeout_leaves_the_run_going(ip):
    job = bg(ip, "2", SPIN.format(60))
    started = time.monotonic()
    ip.run_line_magic("parallel_wait", "--timeout 0.2")
    assert time.monotonic() - started < bound(1)
    assert not job.done()
    ip.run_line_magic("parallel_stop", "")
    assert job.state == "stopped"


def test_timeout_applies_to_a_background_run(ip):
    job = bg(ip, "2 --timeout 0.3", SPIN.format(60))
    assert job.wait(bound(5))
    with pytest.raises(ParallelTimeout):
        job.result()


def test_unload_stops_background_runs(ip):
    job = bg(ip, "2", SPIN.format(60))
    started = time.monotonic()
    ip.run_line_magic("unload_ext", "ipy_parallel")
    assert job.done() and time.monotonic() - started < bound(5)
    ip.run_line_magic("load_ext", "ipy_parallel")  # for the fixture's unload


def test_background_with_targets(ip):
    job = bg(ip, "3 --targets 2,0", SLEEP.format(bound(1)) + "worker_id")
    assert job.result(bound(10)) == [2, 0]


def test_a_bad_input_fails_the_cell_not_the_thread(ip):
    ip.user_ns["lock"] = __import__("threading").Lock()
    with pytest.raises(UsageError, match="cannot be pickled"):
        bg(ip, "2 --push lock", "1")
    assert magics_of(ip).pools.running() == []
    assert ip.run_cell_magic("parallel", "2", "worker_id") == [0, 1]


# -- in a real kernel -----------------------------------------------------------------------------


def outputs_of(messages):
    return [
        m
        for _, m in messages
        if m["msg_type"] in ("stream", "display_data", "update_display_data", "execute_result", "error")
    ]


@pytest.mark.parametrize("backend", ["subinterpreter", "process"])
def test_kernel_stop_button_interrupts_the_cell_running_now_not_the_background_run(kernel, backend):
    # jupyter_client signals the kernel's whole process group: worker processes ignore SIGINT
    reply, messages = execute(
        kernel,
        f"%%parallel 2 --bg --backend {backend}\n" + SLEEP.format(bound(6)) + "print('bg done', worker_id)\nworker_id",
    )
    assert reply["status"] == "ok"
    assert any(
        m["msg_type"] == "execute_result" and "background run [" in m["content"]["data"]["text/plain"]
        for _, m in messages
    )
    bg_id = messages[0][1]["parent_header"]["msg_id"]

    timer = __import__("threading").Timer(0.5, interrupt_kernel, [kernel])
    timer.start()
    reply, _ = execute(kernel, "import time\ntime.sleep(20)")
    timer.join()
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"

    reply, messages = execute(
        kernel, "[j.state for j in get_ipython().magics_manager.registry['ParallelMagics'].pools.background]"
    )
    assert reply["status"] == "ok"
    states = [m["content"]["data"]["text/plain"] for _, m in messages if m["msg_type"] == "execute_result"]
    assert states and states[-1].endswith("'running']"), states

    # Its output lands in its own cell's output area, not in the cell that runs when it comes.
    deadline = time.monotonic() + bound(15)
    seen = []
    while time.monotonic() < deadline:
        try:
            msg = kernel.get_iopub_msg(timeout=0.5)
        except Exception:
            continue
        if msg["msg_type"] == "stream" and "bg done" in msg["content"]["text"]:
            seen.append(msg["parent_header"].get("msg_id"))
            if len(seen) == 2 or "bg done 0" in msg["content"]["text"] and "bg done 1" in msg["content"]["text"]:
                break
    assert seen and all(parent == bg_id for parent in seen), seen
    reply, messages = execute(kernel, "%parallel_wait\n%parallel_status")
    assert reply["status"] == "ok"
    said = "".join(m["content"].get("text", "") for _, m in messages if m["msg_type"] == "stream")
    assert re.search(
        r"background run \[\d+\], %%parallel( \[process\])? --bg \[\d+\] on 2 workers: done after", said
    ), said


# -- exit and unload with workers that cannot be stopped -------------------------------------------

EXIT_SCRIPT = """
import sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "ipy_parallel")
job = shell.run_cell_magic("parallel", "2 --bg", {source!r})
time.sleep(0.3)
begin = time.perf_counter()
{op}
print(f"took {{time.perf_counter() - begin:.2f}}", job.state, flush=True)
"""


@pytest.mark.parametrize(
    "op",
    ["shell.run_line_magic('unload_ext', 'ipy_parallel')", "sys.exit(0)", "shell.run_line_magic('parallel_stop', '')"],
)
def test_exit_unload_and_stop_are_bounded_with_a_worker_that_cannot_be_stopped(op):
    import subprocess
    import sys

    source = "import select\nselect.select([], [], [], 1000)"
    code = EXIT_SCRIPT.format(source=source, op=op)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=bound(60))
    assert time.monotonic() - started < bound(20), proc.stderr
    assert "Fatal Python error" not in proc.stderr and "Traceback" not in proc.stderr.replace(
        "ParallelInterrupted", ""
    ), proc.stderr
    if "sys.exit" not in op:
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("took"))
        assert float(line.split()[1]) < bound(8), line
        assert line.split()[2] in ("stopped", "stopping"), line
    else:  # stopped by the extension's exit hook before the engine's ends the pool: not lost, not "failed"
        said = proc.stdout + proc.stderr
        assert "was stopped" in said and "failed" not in said and "closed before" not in said, said


def test_ctrl_c_at_random_instants_while_background_cells_start(ip):
    """However a Ctrl-C lands in a --bg cell's start (or in a stop), no run is left going that
    nothing follows: once the runs listed are stopped, the pool is idle, and the next cell runs.
    The runs would go on for long, so one left behind shows."""
    from helpers import RandomInterrupts, soak

    pools = magics_of(ip).pools
    interrupted = starts = 0
    with RandomInterrupts(seed=13) as fire:
        while fire.landed < soak(300):
            starts += 1
            outcome = fire.call(lambda: bg(ip, "2", "import time\ntime.sleep(30)"))
            interrupted += isinstance(outcome, KeyboardInterrupt)
            if fire.rng.random() < 0.3:
                fire.call(lambda: ip.run_line_magic("parallel_stop", ""))
            pools.stop_background()  # out of the fire
            assert all(job.done() for job in pools.background), [job.describe() for job in pools.background]
            pool = pools.of("subinterpreter")  # None while no start has got as far as making one
            deadline = time.monotonic() + bound(2)
            while pool is not None and pool.state != "idle":  # a stopped run's workers end a moment later
                assert time.monotonic() < deadline, "a run was left going that no handle follows"
                time.sleep(0.001)
    assert ip.run_cell_magic("parallel", "2", "worker_id") == [0, 1]
    states = {}
    for job in pools.background:
        states[job.state] = states.get(job.state, 0) + 1
    print(
        f"\n{fire.landed} interrupts landed; {interrupted} of {starts} background starts interrupted; "
        f"ends of the last {len(pools.background)}: {states}; no run left going"
    )
    assert interrupted > 0 and "failed" not in states


def test_a_cell_that_fails_after_it_started_a_background_run_says_where_the_run_went(ip, capsys):
    # In a kernel, a Ctrl-C can land as ipykernel shows the handle the magic returned: the cell
    # ends in KeyboardInterrupt, with no handle, and the run goes on.
    failed = ip.run_cell(
        "handle = get_ipython().run_cell_magic('parallel', '2 --bg', 'import time\\ntime.sleep(30)')\n"
        "raise KeyboardInterrupt"
    )
    assert isinstance(failed.error_in_exec, KeyboardInterrupt)
    said = capsys.readouterr().err
    assert "this cell failed after it started background run [1], which goes on: %parallel_wait 1" in said, said
    assert "%parallel_stop 1 stops it" in said
    ip.run_cell("1 / 0")  # a later failing cell started no run: nothing said
    assert "background run" not in capsys.readouterr().err
    ip.run_line_magic("parallel_stop", "1")


def test_ctrl_c_in_parallel_wait_stops_the_waiting_not_the_run(ip):
    job = bg(ip, "2", SPIN.format(60))
    timer = ctrl_c_after(0.3)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt, match="stopped waiting; the background runs go on"):
        ip.run_line_magic("parallel_wait", "")
    timer.join()
    assert time.monotonic() - started < bound(2)
    assert job.state == "running"
    timer = ctrl_c_after(0.3)
    with pytest.raises(KeyboardInterrupt, match=r"stopped waiting for background run \[1\]; it goes on"):
        ip.run_cell_magic("parallel", "2 --wait", "1")
    timer.join()
    assert job.state == "running"
    job.stop()
    assert job.state == "stopped"


def test_in_terminal_ipython_the_prompt_comes_back_at_once_and_the_run_reports_when_it_ends():
    with terminal_ipython() as child:
        child.send("%load_ext ipy_parallel\r")
        child.expect(r"In \[2\]:")
        for line in [
            "%%parallel 2 --bg -o r",
            "import time",
            "time.sleep(1.5)",
            "print('hello from', worker_id)",
            "worker_id",
            "",
        ]:
            child.send(line + "\r")
        child.send("\r")
        started = time.monotonic()
        child.expect(r"In \[3\]:")
        back = time.monotonic() - started
        child.expect(r"%%parallel --bg \[1\]: 2 workers, \d+\.\d\d s wall.* · ✓")
        child.expect(r"In \[3\]:")  # printed above the prompt, which is drawn again below it
        child.send("r\r")
        child.expect(r"In \[4\]:")
    text = terminal_text(child)
    assert back < bound(1.2), f"the prompt came back after {back:.1f} s"
    assert "[0] hello from 0" in text and "[1] hello from 1" in text, text
    assert "Out[3]: [0, 1]" in text, text


def test_background_cells_on_worker_processes(ip):
    job = bg(ip, "2 --backend process -o pids", "import os, time\ntime.sleep(0.3)\nos.getpid()")
    assert ip.run_cell_magic("parallel", "2", "worker_id") == [0, 1]  # the sub-interpreter pool is another pool
    assert job.result(bound(30)) is None and len(set(ip.user_ns["pids"])) == 2
    job = bg(ip, "2 --backend process", SPIN.format(60))
    job.stop()
    assert job.state == "stopped"
    assert ip.run_cell_magic("parallel", "2 --backend process", "worker_id") == [0, 1]


def test_the_fallback_never_takes_a_process_pool_a_background_run_uses(ip):
    ip.run_line_magic("parallel_config", "--fallback on")
    job = bg(ip, "--backend process", SLEEP.format(bound(2)) + "worker_id")
    with pytest.raises(UsageError, match="busy with background run .* so the fallback to processes cannot run"):
        ip.run_cell_magic("parallel", "2", "import numpy\n1")
    assert job.result(bound(30)) == list(range(len(job.result())))  # not closed under it
