"""Every notebook in notebooks/ executes cleanly in a real kernel (nbclient)."""

import re

import nbformat
import pytest
from helpers import REPO
from nbclient import NotebookClient

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == [
        "free_threading.ipynb",
        "joblib.ipynb",
        "native_bench.ipynb",
        "quickstart.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = {i: c.get("outputs", []) for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    errors = [(i, o) for i, outs in outputs.items() for o in outs if o.output_type == "error"]
    tagged = {i for i, c in enumerate(nb.cells) if "raises-exception" in c.metadata.get("tags", [])}
    assert {i for i, _ in errors} == tagged, "only the cells tagged raises-exception may fail"
    # Concatenated, not joined with newlines: the kernel may flush one print() as several stream
    # outputs ("sum of squares:" then " 3333... True"), as its timed flush thread sees fit.
    text = "".join(o.get("text", "") for outs in outputs.values() for o in outs if o.output_type == "stream")
    shown = "".join(
        o.get("data", {}).get("text/plain", "")
        for outs in outputs.values()
        for o in outs
        if o.output_type == "display_data"
    )
    if path.name == "native_bench.ipynb":
        # The report is a rich display there (its HTML table, with text/plain beside it).
        assert "every method computed the same values" in shown and "values agree: True" in text
        assert any(
            "text/html" in o.get("data", {}) and "ipy_parallel" in o["data"]["text/html"]
            for outs in outputs.values()
            for o in outs
            if o.output_type == "display_data"
        )
        assert any(
            o.output_type == "display_data" and "image/png" in o.get("data", {})
            for outs in outputs.values()
            for o in outs
        ), "--plot drew no chart"
    if path.name == "free_threading.ipynb":
        # numpy in worker threads, and an array pushed by reference: the kernel sees their writes.
        assert "[0] worker 0 of 2: " in text and "[1] worker 1 of 2: " in text, text
        assert "the kernel sees: [1. 2.] at the same address: True" in text, text
        gil_on = "GIL enabled: True" in text
        assert gil_on != ("GIL enabled: False" in text)
        assert ("threads pool: GIL enabled: threads take turns" in text) == gil_on, text  # 3.14t: they do not
        assert "RuntimeWarning" not in text  # the display says it, not a warning
        assert "the last cell's run, on the threads pool:" in text and "timeline: 2 workers" in shown, (
            shown
        )  # --timeline
    if path.name == "quickstart.ipynb":
        assert "same answers: True" in text and "sum of squares: 333332833333500000 True" in text, text
        # The main cell's summary counts what its worker.progress() went through: 2 x 25M - 1 items.
        assert "%%parallel: 2 workers, " in shown and ", 50M items at " in shown, shown
        assert "[3] worker 3 of 4: 250000 numbers from 750000" in text
        assert "meanwhile, this kernel is free: 499999500000" in text and "background answers: True" in text, text
        ((_, error),) = errors
        assert error.ename == "ParallelError" and "[workers 0-3]" in "\n".join(error.traceback)
    if path.name == "joblib.ipynb":
        # joblib's Parallel on the sub-interpreters, beside loky, with the same values; in order as a
        # generator; a call's exception by its type; numpy named, with loky as the way out.
        assert re.search(r"ipy_parallel: [\d.]+ s, [\d.]+x serial, same values: True", text), text
        assert re.search(r"loky: [\d.]+ s, [\d.]+x serial, same values: True", text), text
        assert "got 0\ngot 10\ngot 20\ngot 30\ngot 40" in text and "ValueError: bad item: 3" in text, text
        (error,) = [o for _, o in errors]
        assert error.ename == "ImportError" and error.evalue.startswith("numpy cannot be imported in a sub-interpreter")
        assert 'backend="loky"' in error.evalue and "np.float64(2.0)" in text, text
