"""Installing like any Python package: pip wheel, then the wheel with its [notebook] extra into a clean venv, used as a user would."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO

import ipy_parallel

SKIP = {".git", "build", "test-artifacts", "__pycache__", ".pytest_cache"}


def _source_copy(dest):
    """The repository's sources, without its venvs and build trees (a wheel builds from scratch)."""

    def ignore(directory, names):
        return [n for n in names if n in SKIP or n.startswith(".venv") or n.endswith((".so", ".egg-info"))]

    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def _run(*cmd, timeout=900, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel built by `pip wheel` from a copy of the sources, installed with [notebook] into a
    fresh venv of this Python: (venv directory, wheel path)."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = _source_copy(tmp / "src")
    wheels = tmp / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, source)
    [wheel] = list(wheels.glob("ipy_parallel-*.whl"))
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{wheel}[notebook]")
    return venv, wheel


def test_the_wheel_carries_the_package_typing_and_the_kernelspec(installed):
    import zipfile

    _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert f"ipy_parallel-{ipy_parallel.__version__}.dist-info/METADATA" in names  # the version, from one place
    for member in (
        "ipy_parallel/py.typed",
        "ipy_parallel/_engine.pyi",
        "ipy_parallel/_wire/runtime.py",
        "ipy_parallel/backends/process/worker.py",
        "ipy_parallel/backends/ipyparallel/remote.py",
    ):
        assert member in names, member
    assert any(n.startswith("ipy_parallel/_engine.") and n.endswith(".so") for n in names)
    assert any(n.endswith(".data/data/share/jupyter/kernels/ipy_parallel/kernel.json") for n in names)
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)


def test_a_clean_venv_runs_the_engine_and_lists_the_kernel(installed, tmp_path):
    venv, _ = installed
    python = venv / "bin" / "python"
    code = textwrap.dedent("""
        import ipy_parallel
        with ipy_parallel.Pool(2) as pool:
            print([r.value for r in pool.run("worker_id * 10")])
        print(ipy_parallel.parallel(["math", "factorial", (5,)], ["operator", "add", (2, 3)]))
    """)
    assert _run(python, "-c", code, cwd=tmp_path).split("\n")[:2] == ["[0, 10]", "[120, 5]"]
    kernels = _run(venv / "bin" / "jupyter", "kernelspec", "list", env={**os.environ, "JUPYTER_PATH": ""})
    assert "ipy_parallel" in kernels and str(venv) in kernels  # from the wheel's data, no second command


def test_load_ext_and_parallel_in_ipython_from_the_clean_venv(installed, tmp_path):
    venv, _ = installed
    # Two cells, as typed at the prompt one after the other.
    cells = ["%load_ext ipy_parallel", "%%parallel 2\nprint('hello from', worker_id)"]
    code = "ip = get_ipython()\n" + "".join(f"assert ip.run_cell({c!r}).success\n" for c in cells)
    out = _run(venv / "bin" / "ipython", "--no-banner", "--quick", "-c", code, cwd=tmp_path)
    assert sorted(line for line in out.splitlines() if "hello" in line) == ["[0] hello from 0", "[1] hello from 1"]
