"""The IPython face of ipy_parallel: %load_ext ipy_parallel registers the magics (magics.py), thin over cell.py and session.py."""

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython) -> None:
    """%load_ext ipy_parallel: register %%parallel, %parallel_config, %parallel_status, %parallel_reset and %native_bench."""
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """%unload_ext ipy_parallel: close the extension's pools and remove its magics."""
    from .magics import unload

    unload(ipython)
