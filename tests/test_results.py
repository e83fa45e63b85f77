"""ipy_parallel.results beyond the wire: how a run's end is named (Outcome)."""

from ipy_parallel import ParallelInterrupted, ParallelTimeout
from ipy_parallel.results import Outcome


def test_an_outcome_says_how_the_run_ended():
    assert Outcome.of(None) is Outcome.OK and Outcome.of(None, failed=True) is Outcome.FAILED
    assert Outcome.of(ValueError("x")) is Outcome.FAILED
    for stopped in (KeyboardInterrupt(), ParallelInterrupted("the run was interrupted"), ParallelTimeout("late")):
        assert Outcome.of(stopped, failed=True) is Outcome.STOPPED, stopped
    assert Outcome.STOPPED == "stopped" and f"{Outcome.FAILED}" == "failed"  # what the displays key on
