"""What crosses into a worker (ipy_parallel._wire): the shipped modules, installed in order in a fresh process."""

import subprocess
import sys

from ipy_parallel._wire import shipped_sources


def test_shipped_modules_install_in_order_in_a_fresh_process():
    # What a worker process does: install the shipped modules, then run a task through setup().
    names = [name for name, _, _ in shipped_sources()]
    assert names == ["_ipy_parallel_protocol", "_ipy_parallel_runtime"]
    code = """
import sys
from ipy_parallel._wire import install, shipped_sources
runtime = install(shipped_sources())
out = []
run = runtime.setup(0, 1, lambda stream, text: out.append((stream, text)), None)
value, error, fmt = run("print('hi')\\nworker_id + 41", "<fresh>", None)
import marshal
print(marshal.loads(value), error, out, sorted(m for m in sys.modules if m.startswith("_ipy_parallel")))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "41 None [(1, 'hi'), (1, '\\n')] ['_ipy_parallel_protocol', "
        "'_ipy_parallel_runtime', '_ipy_parallel_worker_context']"
    )
