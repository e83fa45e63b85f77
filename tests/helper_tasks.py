"""Functions for parallel() tests: a module the workers import by name (it must not import ipy_parallel)."""


def add(a, b):
    return a + b


def seed(n):
    k = 1
    for i in range(n, 1, -1):
        k = k * i % 1000000007
    return k


def fail(message):
    raise KeyError(message)


class Custom(Exception):
    pass


def fail_custom():
    raise Custom("custom failure")


def make_generator():
    return (i for i in range(3))


def echo(*args):
    return args


def which_interpreter():
    try:
        import _interpreters
    except ImportError:  # 3.12
        import _xxsubinterpreters

        return int(_xxsubinterpreters.get_current())
    return _interpreters.get_current()[0]


def divide(x):
    return 1 / x


def spin(seconds):
    """Busy for ``seconds`` (of wall time), in pure Python: a call that only an interrupt stops early."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds


def where_after(seconds):
    spin(seconds)
    return which_interpreter()


def fail_on_first(i):
    if i == 0:
        raise ValueError("the first call failed")
    return spin(20)
