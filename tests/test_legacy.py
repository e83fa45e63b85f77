"""parallel(): the subinterpreter_parallelism API, and each way it improves on the original."""

import pickle
import sys
import threading

import pytest

from ipy_parallel import parallel


def test_results_in_order():
    assert parallel(["helper_tasks", "add", (1, 2)], ["helper_tasks", "add", ("a", "b")]) == [3, "ab"]


def test_seed_workload_matches_serial():
    import helper_tasks

    ns = [20_000, 30_000, 25_000]
    assert parallel(*[["helper_tasks", "seed", (n,)] for n in ns]) == [helper_tasks.seed(n) for n in ns]


def test_each_task_runs_in_its_own_interpreter():
    ids = parallel(*[["helper_tasks", "which_interpreter", ()] for _ in range(3)])
    assert len(set(ids)) == 3


def test_no_items_no_work():
    assert parallel() == []


def test_tuple_items_and_list_args_work():
    # The original segfaults on a tuple item; here it is simply accepted.
    assert parallel(("helper_tasks", "echo", [1, 2])) == [(1, 2)]


def test_stdlib_function():
    assert parallel(["math", "factorial", (10,)], ["operator", "mul", (6, 7)]) == [3628800, 42]


@pytest.mark.parametrize(
    "item, error, message",
    [
        (["helper_tasks", "add"], ValueError, "must have 3 elements"),
        (["helper_tasks", "add", (1, 2), "extra"], ValueError, "must have 3 elements"),
        ("helper_tasks.add", TypeError, "must be a list"),
        ({"module": "helper_tasks"}, TypeError, "must be a list"),
        ([b"helper_tasks", "add", (1, 2)], TypeError, "module_name must be str, not bytes"),
        (["helper_tasks", b"add", (1, 2)], TypeError, "function_name must be str, not bytes"),
        (["", "add", (1, 2)], ValueError, "module_name is empty"),
        (["helper_tasks", "add", 5], TypeError, "args must be a tuple"),
    ],
)
def test_malformed_items_raise(item, error, message):
    with pytest.raises(error, match=message):
        parallel(["helper_tasks", "add", (1, 2)], item)


def test_task_exception_reraised_with_its_own_type_and_traceback():
    with pytest.raises(KeyError) as info:
        parallel(["helper_tasks", "add", (1, 1)], ["helper_tasks", "fail", ("missing key",)])
    assert info.value.args == ("missing key",)
    notes = "\n".join(info.value.__notes__)
    assert "task 1 (helper_tasks.fail)" in notes
    assert 'helper_tasks.py", line' in notes and "raise KeyError(message)" in notes


def test_custom_exception_type_preserved():
    import helper_tasks

    with pytest.raises(helper_tasks.Custom, match="custom failure"):
        parallel(["helper_tasks", "fail_custom", ()])


def test_missing_module_or_function_raises_its_error():
    with pytest.raises(ModuleNotFoundError, match="no_such_module_xyz"):
        parallel(["no_such_module_xyz", "f", ()])
    with pytest.raises(AttributeError, match="no_such_function"):
        parallel(["helper_tasks", "no_such_function", ()])


def test_unpicklable_argument_raises_before_running():
    with pytest.raises(TypeError, match="cannot be sent to the workers"):
        parallel(["helper_tasks", "echo", (threading.Lock(),)])


def test_unpicklable_result_raises():
    with pytest.raises(pickle.PicklingError, match="of type generator"):
        parallel(["helper_tasks", "make_generator", ()])


def test_callers_objects_keep_their_reference_counts():
    args = ([1, 2, 3], "text")
    module_name, function_name = "helper_tasks", "echo"
    item = [module_name, function_name, args]
    before = [sys.getrefcount(o) for o in (item, args, module_name, function_name, args[0])]
    for _ in range(5):
        assert parallel(item, ["helper_tasks", "add", (1, 2)]) == [([1, 2, 3], "text"), 3]
    after = [sys.getrefcount(o) for o in (item, args, module_name, function_name, args[0])]
    assert after == before


def test_pool_resized_when_task_count_changes():
    assert parallel(*[["helper_tasks", "add", (i, i)] for i in range(4)]) == [0, 2, 4, 6]
    assert parallel(["helper_tasks", "add", (5, 5)]) == [10]
