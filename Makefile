# make demo: the engine at work.  make test: every test.  Both build what they need from scratch.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
NATIVE := $(wildcard native/*.h native/*.h.in native/*.c native/*.cpp) ipy_parallel/_wire/protocol.py CMakeLists.txt pyproject.toml

# A GIL per interpreter needs CPython 3.12+. Every suitable CPython, one per minor version and
# build, the preferred first (3.13, then 3.12, then newer ones, each free-threaded build, "3.14t",
# after its GIL build): on PATH, else the newest of that version in pyenv's versions (found with or
# without the pyenv command; a free-threaded one is named like 3.14.7t there). pyenv's shims answer
# to python3.13 even where that version is not selected, so each candidate must actually run, and
# be the build its name says.
# Override with `make PYTHON=/path/to/python3.12 VENV=.venv-3.12 ...` (a venv per Python).
define find_pythons
root=$$(pyenv root 2>/dev/null || echo "$${PYENV_ROOT:-$$HOME/.pyenv}"); \
for v in 3.13 3.12 3.14 3.14t 3.15 3.15t; do \
  m=$${v%t}; t=$${v#$$m}; \
  fits="import sys, sysconfig; sys.exit(sys.version_info < (3, 12) or bool(sysconfig.get_config_var('Py_GIL_DISABLED')) != bool('$$t'))"; \
  p=$$(command -v python$$v 2>/dev/null) && "$$p" -c "$$fits" 2>/dev/null && { echo "$$p"; continue; }; \
  d=$$(ls "$$root/versions" 2>/dev/null | grep -E "^$${m/./\\.}\.[0-9]+$$t$$" | sort -t. -k3,3nr | head -1); \
  [ -n "$$d" ] && "$$root/versions/$$d/bin/python$$v" -c "$$fits" 2>/dev/null && echo "$$root/versions/$$d/bin/python$$v"; \
done; true
endef
PYTHON ?= $(firstword $(shell $(find_pythons)))

.PHONY: demo test stubs bench lab build sanitize clean pythons venv-name

demo: $(VENV)/.built
	$(PY) -m ipy_parallel --notebook notebooks/quickstart.ipynb

# Half of a test's time is spent waiting (kernels starting, cells sleeping, children exiting):
# two tests at a time on two cores, a file's tests together (they share its kernel), with
# pytest-xdist, the longest files first (tests/conftest.py orders them). A test marked `alone`
# (it measures CPU time or speed) runs with nothing beside it.
PARALLEL_TESTS := -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

# The browser test drives Debian's chromium (no browser download): installed here when we are root
# and it is missing; if that fails, tests/test_jupyterlab.py skips and says why.
test: $(VENV)/.built
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq chromium) \
	    || echo "warning: chromium could not be installed; tests/test_jupyterlab.py will skip"; \
	fi
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest $(PARALLEL_TESTS)

# The engine's type stub, ipy_parallel/_engine.pyi, made anew from the built engine (tests/test_engine.py
# fails while it is stale).
stubs: $(VENV)/.built
	$(PY) -m pybind11_stubgen ipy_parallel._engine -o build/stubs
	cp build/stubs/ipy_parallel/_engine.pyi ipy_parallel/_engine.pyi

# Its "pythons" section sets every CPython `make pythons` finds side by side: each other one gets
# its venv first (as `make test PYTHON=...` makes it), named by `make venv-name`.
bench: $(VENV)/.built
	others=""; for p in $$($(MAKE) -s pythons | tail -n +2); do \
	  v=$$($(MAKE) -s venv-name PYTHON=$$p) && $(MAKE) --no-print-directory build PYTHON=$$p VENV=$$v || exit 1; \
	  others="$$others,$$v/bin/python"; \
	done; $(PY) benchmarks/suite.py --pythons "$$others"

# JupyterLab on notebooks/, on this machine only, with the "Python 3 (ipy_parallel)" kernel (the
# package's wheel data put it in the venv).
lab: $(VENV)/.built
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser --notebook-dir=notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

build: $(VENV)/.built

# The engine built with AddressSanitizer + UndefinedBehaviorSanitizer, in a venv of its own, and
# the tests that drive it run on it (SAN_TESTS: the engine, the contract of every backend, the
# lifecycle under Ctrl-C, the magics, a real kernel, joblib's backend; not the browser, notebooks, packaging or
# display tests, which add no C++ path and most of the time). CPython itself is not
# instrumented: the runtimes are preloaded, and leak checking is off (an interpreter keeps
# memory until exit by design).
SAN_TESTS := test_engine.py test_engine_base.py test_contract.py test_lifecycle.py test_subinterpreter.py \
  test_executor.py test_worker.py test_wire.py test_interrupt.py test_free_threading.py test_endurance.py \
  test_legacy.py test_bad_cells.py test_magics.py test_kernel.py test_joblib.py
SAN_VENV := .venv-sanitize
SAN_RUNTIMES = $$(g++ -print-file-name=libasan.so):$$(g++ -print-file-name=libubsan.so)
sanitize: $(VENV)/.deps
	$(PYTHON) -m venv --clear $(SAN_VENV)
	$(SAN_VENV)/bin/python -m pip install --quiet -r <($(PY) -m pip freeze --exclude-editable | grep -v '^ipy.parallel')
	$(SAN_VENV)/bin/python -m pip install --quiet --no-build-isolation --no-deps \
	  -Ccmake.define.IPP_SANITIZE=ON -Ccmake.define.IPP_WERROR=ON -Ccmake.build-type=RelWithDebInfo \
	  -Cbuild-dir=build/sanitize .
	cd tests && IPP_TIME_SCALE=3 LD_PRELOAD=$(SAN_RUNTIMES) ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:quarantine_size_mb=0:thread_local_quarantine_size_kb=0 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 $(CURDIR)/$(SAN_VENV)/bin/python -m pytest -p no:cacheprovider $(PARALLEL_TESTS) $(SAN_TESTS)

$(VENV)/.deps: pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: ipy_parallel needs CPython 3.12 or newer (3.13 preferred): a GIL per interpreter arrived in 3.12."; \
	  echo "No python3.13 or python3.12 was found on PATH or in pyenv. Install one (pyenv install 3.13, or your"; \
	  echo "distribution's python3.13 with its -dev and -venv packages), or run: make PYTHON=/path/to/python3.13"; \
	  exit 1; fi
	@echo "Using $(PYTHON) ($$($(PYTHON) -c 'import sys; print(sys.version.split()[0])')) in $(VENV)"
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# The build backend from pyproject's build-system (and CMake and Ninja), so that the builds
	@# below run without isolation and an engine change rebuilds in seconds; then the package
	@# with every extra the tests use (pyproject's [test], and [xeus] where it has wheels: not on a
	@# free-threaded Python).
	$(PY) -m pip install --quiet $$($(PY) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"])') "cmake>=3.18" ninja
	$(PY) -m pip install --quiet --no-build-isolation -e ".[$$($(PY) -c 'import sysconfig; print("test" if sysconfig.get_config_var("Py_GIL_DISABLED") else "test,xeus")')]"
	touch $@

$(VENV)/.built: $(VENV)/.deps $(NATIVE)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -Ccmake.define.IPP_WERROR=ON -e .
	touch $@

# The CPythons `make test` can run on, preferred first (what .ci/run tests on).
pythons:
	@$(find_pythons)

# The venv a non-default PYTHON gets: .venv-3.12, .venv-3.14t (free-threaded), ...
venv-name:
	@$(PYTHON) -c 'import sys, sysconfig; print(".venv-%d.%d" % sys.version_info[:2] + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))'

clean:
	rm -rf $(VENV) .venv-3.* $(SAN_VENV) build
