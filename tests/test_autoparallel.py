"""%autoparallel: every cell as %%parallel while on, magics still local, the mode visible, off restores all."""

import os
import re

import pytest
from IPython.core.error import UsageError

from helpers import terminal_ipython, terminal_text


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


@pytest.mark.parametrize(
    "cell",
    [
        "%%time\nhere = 1",
        "%%capture captured\nhere = 1",
        "%time here = 1",
        "%%timeit -n 1 -r 1 -o\nglobal here\nhere = 1",
    ],
)
def test_a_cell_that_begins_with_a_magic_runs_its_body_in_the_kernel(ip, cell):
    # IPython hands the body of %%time, %%capture or %%timeit to the same input transformers as
    # a typed cell: the body is the magic's, and the magic runs here.
    ip.run_line_magic("autoparallel", "on")
    result = ip.run_cell(cell)
    assert result.success, result.error_in_exec
    assert ip.user_ns.get("here") == 1
    assert ip.run_cell("'here' in globals()").result == [False] * os.cpu_count()  # the next cell: workers


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


def test_in_terminal_ipython_a_line_runs_on_enter_and_the_prompt_shows_the_mode():
    """Real terminal IPython (prompt_toolkit, in a pty): with autoparallel on, a line is a
    complete cell (not a cell magic waiting for a blank line), and the prompt says the mode."""
    with terminal_ipython() as child:
        for line, prompt in [
            ("%load_ext ipy_parallel", 2),
            ("%autoparallel on", 3),
            ("worker_id * 2", 4),
            ("%autoparallel off", 5),
            ("'here'", 6),
        ]:
            child.send(line + "\r")
            child.expect(rf"In \[{prompt}\]:")
    text = terminal_text(child)
    assert "[parallel] In [3]:" in text and "[parallel] In [4]:" in text, text
    assert re.search(r"Out\[3\]: \[0, 2(, \d+)*\]", text), text  # worker_id * 2 in every worker, on Enter
    assert "[parallel] In [5]" not in text and "Out[5]: 'here'" in text, text
