"""The README's Python examples, run as a user would paste them into a script: each twenty times, exiting cleanly every time."""

import re
import subprocess
import sys

import pytest

from helpers import REPO

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
# Scripts of their own: no IPython syntax, and nothing that reads what an example cell left behind.
SCRIPTS = [b for b in BLOCKS if not any(line.lstrip().startswith("%") for line in b.splitlines()) and ".get(" not in b]


def test_the_readme_has_its_examples():
    assert len(SCRIPTS) >= 2 and any("SubinterpreterExecutor" in s for s in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.splitlines()[0] for s in SCRIPTS])
def test_a_readme_example_runs_and_exits_cleanly_twenty_times(script, tmp_path):
    path = tmp_path / "example.py"
    path.write_text(script, encoding="utf-8")
    for run in range(20):
        proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", f"run {run}: exit {proc.returncode}\n{proc.stderr}"


def test_the_layout_table_names_every_source_file():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    files = sorted((REPO / "ipy_parallel").rglob("*.py")) + sorted((REPO / "native").iterdir())
    unnamed = [str(f.relative_to(REPO)) for f in files if (f.name if f.suffix == ".py" else f.stem) not in layout]
    assert unnamed == [], "the README's Layout table does not say what these are"
