"""Shared fixtures: real pools of real sub-interpreters, and real child Python processes."""

import subprocess
import sys
import textwrap
import time

import pytest

import ipy_parallel


@pytest.fixture
def pool():
    """A fresh 2-worker pool, closed after the test."""
    with ipy_parallel.Pool(2) as p:
        yield p


@pytest.fixture
def run_script(tmp_path):
    """Run Python source as a script (its functions live in __main__) in a child interpreter
    process; returns (completed process, seconds it took)."""

    def run(source: str, timeout: float = 60):
        script = tmp_path / "script.py"
        script.write_text(textwrap.dedent(source), encoding="utf-8")
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=timeout
        )
        return proc, time.perf_counter() - start

    return run


@pytest.fixture
def ip():
    """An in-process IPython shell with the extension loaded (and unloaded after)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "ipy_parallel")
    yield shell
    shell.run_line_magic("unload_ext", "ipy_parallel")
    for name in [k for k in shell.user_ns if not k.startswith("_") and k not in ("In", "Out", "exit", "quit",
                                                                                 "get_ipython")]:
        del shell.user_ns[name]


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kernel():
    """A real "Python 3 (ipy_parallel)" kernel from the repository's kernelspec, through jupyter_client."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    specs = KernelSpecManager(kernel_dirs=[str(REPO / "kernel")])
    km = KernelManager(kernel_name="ipy_parallel", kernel_spec_manager=specs)
    km.start_kernel(cwd=str(REPO / "tests"))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    kc.manager = km  # for interrupt_kernel
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def interrupt_kernel(kc) -> None:
    """What the notebook's stop button does."""
    kc.manager.interrupt_kernel()


def execute(kc, code: str, timeout: float = 60):
    """Run code in the kernel; return (execute_reply content, [(seconds since sent, iopub msg)])."""
    start = time.monotonic()
    msg_id = kc.execute(code)
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append((time.monotonic() - start, msg))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    return reply["content"], messages
