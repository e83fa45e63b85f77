"""%autoparallel: every cell as %%parallel while on, magics still local, the mode visible, off restores all."""

import os
import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError

from conftest import bound


def test_every_cell_runs_in_the_workers_while_on(ip, capsys):
    ip.run_line_magic("autoparallel", "on")
    assert "autoparallel is on" in capsys.readouterr().out
    result = ip.run_cell("worker_id * 10")
    assert result.success and result.result == [10 * i for i in range(os.cpu_count())]
    ip.run_cell("here = worker_id")  # a statement: bound in the workers, not in the kernel
    assert "here" not in ip.user_ns
    ip.run_cell("%autoparallel off")
    assert ip.run_cell("'here' in globals()").result is False
    assert ip.run_cell("%parallel here").result == list(range(os.cpu_count()))


def test_magics_and_shell_commands_stay_local(ip, capsys):
    ip.run_line_magic("autoparallel", "on")
    ip.run_cell("%parallel_status")
    assert "autoparallel is on" in capsys.readouterr().out
    assert ip.run_cell("%%parallel 2\nworker_id").result == [0, 1]  # an explicit cell keeps its options
    assert ip.run_cell("\n\n   \n").success  # a blank cell is not sent anywhere
    ip.run_cell("%autoparallel off")
    assert ip.run_cell("40 + 2").result == 42


def test_it_follows_the_session_defaults(ip):
    ip.run_line_magic("parallel_config", "-n 3")
    ip.run_line_magic("autoparallel", "on")
    assert ip.run_cell("n_workers").result == [3, 3, 3]


def test_errors_in_the_workers_fail_the_cell(ip):
    ip.run_line_magic("autoparallel", "on")
    result = ip.run_cell("1 / 0")
    assert not result.success and type(result.error_in_exec).__name__ == "ParallelError"
    assert ip.run_cell("worker_id").success  # and the mode goes on


def test_history_keeps_what_was_typed(ip):
    ip.run_line_magic("autoparallel", "on")
    ip.run_cell("seen = 1", store_history=True)
    assert ip.history_manager.input_hist_raw[-1] == "seen = 1"


def test_unload_turns_it_off(ip):
    ip.run_line_magic("autoparallel", "on")
    ip.run_line_magic("unload_ext", "ipy_parallel")
    try:
        assert ip.run_cell("41 + 1").result == 42
    finally:
        ip.run_line_magic("load_ext", "ipy_parallel")


def test_status_without_argument_and_bad_argument(ip, capsys):
    ip.run_line_magic("autoparallel", "")
    assert "autoparallel is off" in capsys.readouterr().out
    with pytest.raises(UsageError, match="invalid choice"):
        ip.run_line_magic("autoparallel", "maybe")


def test_terminal_prompt_shows_the_mode():
    # In a process of its own: a terminal shell takes over builtins and the display hook.
    code = textwrap.dedent("""
        from IPython.terminal.interactiveshell import TerminalInteractiveShell
        from ipy_parallel.ipython.autoparallel import PROMPT_MARK
        shell = TerminalInteractiveShell.instance(simple_prompt=True)
        before = shell.prompts
        shell.run_line_magic("load_ext", "ipy_parallel")
        shell.run_line_magic("autoparallel", "on")
        text = "".join(t for _, t in shell.prompts.in_prompt_tokens())
        assert text.startswith(PROMPT_MARK) and "In [" in text, text
        assert shell.run_cell("n_workers").result == [n for n in shell.run_cell("%parallel n_workers").result]
        shell.run_line_magic("autoparallel", "off")
        assert shell.prompts is before
        print("ok", text)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=bound(60))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("ok [parallel] In [")
