"""`!cmd` and %pip without os.fork(): workers keep their variables and a background run goes on; IPython's contract for `!` holds."""

import io
import subprocess
import time

import pytest

from helpers import all_gone, bound, cell, children, ctrl_c_after, execute, interrupt_kernel, magics_of
from ipy_parallel.ipython import shell_commands


def test_a_shell_command_leaves_the_workers_and_a_background_run_alone(ip, capfd):
    cell(ip, "2", "x = worker_id * 3")
    job = cell(ip, "2 --bg", f"import time\ntime.sleep({bound(1):g})\nworker_id")
    ip.run_cell("!echo during the run")
    ip.run_cell("%pip --version")
    assert job.result(bound(10)) == [0, 1] and job.state == "done"
    assert cell(ip, "2", "x") == [0, 3]
    out = capfd.readouterr().out
    assert "during the run" in out and "pip " in out


def test_exit_codes_variables_and_refusals_as_ipython_has_them(ip, capfd):
    ip.user_ns["y"] = 5
    ip.run_cell("!echo value $y {y * 2}; exit 3")
    assert ip.user_ns["_exit_code"] == 3
    ip.run_cell("!kill -9 $$")
    assert ip.user_ns["_exit_code"] == -9
    assert "value 5 10" in capfd.readouterr().out
    with pytest.raises(OSError, match="Background processes not supported"):
        ip.system("sleep 1 &")
    ip.system_raise_on_error = True
    try:
        with pytest.raises(subprocess.CalledProcessError):
            ip.system("exit 4")
    finally:
        ip.system_raise_on_error = False


def test_output_comes_as_it_is_written_on_a_terminal():
    seen = []

    class Out(io.StringIO):
        def write(self, text):
            seen.append((time.monotonic(), text))
            return super().write(text)

    out = Out()
    start = time.monotonic()
    status = shell_commands.run_command("echo first; [ -t 1 ] && echo on a tty; tput cols; sleep 1; echo last", out)
    assert status == 0
    assert out.getvalue().splitlines() == ["first", "on a tty", "80", "last"]
    first = next(t for t, text in seen if "first" in text)
    assert first - start < 0.9, "the output before the sleep came only at the end"


def test_ctrl_c_ends_the_command_not_the_cell(ip):
    timer = ctrl_c_after(0.5)
    start = time.monotonic()
    try:
        ip.run_cell("!sleep 30\nafter = 'ran'")
    finally:
        timer.cancel()
    assert time.monotonic() - start < bound(3)
    assert ip.user_ns["_exit_code"] < 0 and ip.user_ns.get("after") == "ran"


def test_ctrl_c_leaves_no_process_of_the_command_that_ignores_it():
    out = io.StringIO()
    timer = ctrl_c_after(0.5)
    try:
        # the shell ends on the SIGINT; what it started, ignoring SIGINT and SIGHUP, would go on
        status = shell_commands.run_command("sh -c 'trap \"\" INT HUP; echo $$; exec sleep 30' & sleep 30", out)
    finally:
        timer.cancel()
    assert status < 0
    pid = int(out.getvalue().split()[0])
    assert all_gone([pid], bound(2)), "a process of the command that ignores SIGINT and SIGHUP was left running"


def test_a_command_that_closes_its_terminal_runs_to_its_end():
    start = time.monotonic()
    out = io.StringIO()
    assert shell_commands.run_command("echo before; exec </dev/null >/dev/null 2>&1; sleep 1; exit 5", out) == 5
    assert time.monotonic() - start >= 1 and out.getvalue().splitlines() == ["before"]


def test_a_failure_of_ours_midway_leaves_no_process_behind():
    class Broken(io.StringIO):
        def write(self, text):
            raise RuntimeError("the output is gone")

    before = children()
    with pytest.raises(RuntimeError, match="the output is gone"):
        shell_commands.run_command("echo x; sleep 30", Broken())
    assert children() <= before


def test_a_daemon_holding_the_terminal_does_not_hold_the_cell(ip):
    start = time.monotonic()
    ip.run_cell("!(sleep 5 &); echo started")
    assert time.monotonic() - start < bound(2)
    assert ip.user_ns["_exit_code"] == 0


def test_unload_gives_the_shell_its_own_system_back(ip):
    assert "system" in vars(ip)  # ours, over the class's system_piped
    ip.run_line_magic("unload_ext", "ipy_parallel")
    assert "system" not in vars(ip) and ip.system.__func__ is type(ip).system
    ip.run_line_magic("load_ext", "ipy_parallel")
    assert magics_of(ip) is not None and "system" in vars(ip)


def test_in_a_kernel_shell_commands_keep_the_workers_and_print_in_their_cell(kernel):
    reply, _ = execute(kernel, "%%parallel 2\nx = worker_id + 10")
    assert reply["status"] == "ok"
    reply, _ = execute(kernel, f"%%parallel 2 --bg -o bg\nimport time\ntime.sleep({bound(2):g})\nworker_id")
    assert reply["status"] == "ok"
    reply, messages = execute(kernel, "!echo from the shell")
    assert reply["status"] == "ok"
    said = "".join(m["content"].get("text", "") for _, m in messages if m["msg_type"] == "stream")
    assert "from the shell" in said
    timer = __import__("threading").Timer(0.5, interrupt_kernel, [kernel])
    timer.start()
    reply, _ = execute(kernel, "!sleep 30")  # the stop button ends the command; the run goes on
    timer.join()
    reply, messages = execute(kernel, "%parallel_wait\nprint(bg)")
    assert reply["status"] == "ok", reply
    said = "".join(m["content"].get("text", "") for _, m in messages if m["msg_type"] == "stream")
    assert "[0, 1]" in said, said
    reply, messages = execute(kernel, "%%parallel 2\nx")
    assert any(
        m["msg_type"] == "execute_result" and "[10, 11]" in m["content"]["data"]["text/plain"] for _, m in messages
    ), messages
