"""%load_ext's part for joblib: the backend "ipy_parallel" is registered as joblib is imported.

Importing joblib takes about 0.2 s, which a session that never uses it should not pay at
%load_ext; and ``parallel_config(backend="ipy_parallel")`` must work in the very cell that first
imports joblib. So: registered now if joblib is already imported, else by the import of joblib
itself, right after joblib's own code has run (a finder ahead of the others on sys.meta_path
that wraps joblib's loader, once).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

__all__ = ["install", "uninstall"]


def install() -> None:
    """Register the backend now, or when joblib is first imported; nothing if it is not installed."""
    if "joblib" in sys.modules:
        _register()
    elif not any(isinstance(finder, _JoblibFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _JoblibFinder())


def uninstall() -> None:
    """Stop waiting for joblib's import (a backend already registered stays: joblib has no unregister)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _JoblibFinder)]


def _register() -> None:
    try:
        import ipy_parallel.joblib  # noqa: F401  registers on import
    except Exception as exc:  # never the user's `import joblib` that fails for it
        import warnings

        warnings.warn(f"joblib's backend 'ipy_parallel' could not be registered: {exc!r}", stacklevel=2)


class _JoblibFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "joblib":
            return None
        uninstall()  # once: the search below, and any later import, go to the other finders
        spec = importlib.util.find_spec("joblib")
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        try:
            self._loader.exec_module(module)
        finally:  # joblib keeps its own loader, as if this one had never been
            module.__loader__ = module.__spec__.loader = self._loader
        # joblib is whole now, and in sys.modules, as `import joblib` in ipy_parallel.joblib needs.
        _register()

    def __getattr__(self, name):  # get_resource_reader, is_package, get_code...: the real loader's
        return getattr(self._loader, name)
