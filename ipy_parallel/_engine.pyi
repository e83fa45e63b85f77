"""
The C++ engine of ipy_parallel: a warm pool of isolated sub-interpreters, one thread each.
"""
from __future__ import annotations
import collections.abc
import typing
__all__: list[str] = ['CondvarFloor', 'Counted', 'Engine', 'LockHold', 'POOL_SPIN_MICROS', 'RAW_FORMAT', 'SEED_KERNEL_MAX_N', 'barrier_abort', 'barrier_arrive', 'barrier_excuse', 'barrier_wait', 'clear_reserve', 'close_all_pools', 'interpreters_alive', 'prepare_main_interpreter', 'queue_clear', 'queue_get', 'queue_put', 'queue_size', 'reserve_limit', 'reserve_size', 'seed_kernel', 'set_reserve_limit', 'set_stuck_exit_status', 'shared_drop', 'shared_get', 'shared_put']
class Counted:
    """
    Counted(iterable): iterates iterable, counting the items it passes on (count).
    """
    @staticmethod
    def __new__(type, *args, **kwargs):
        """
        Create and return a new object.  See help(type) for accurate signature.
        """
    def __iter__(self):
        """
        Implement iter(self).
        """
    def __next__(self):
        """
        Implement next(self).
        """
class Engine:
    def __init__(self, n_workers: typing.SupportsInt | typing.SupportsIndex, modules: str, fresh: bool = False) -> None:
        """
        Start n_workers workers (all in parallel), each a thread with one isolated sub-interpreter that installs the shipped modules (a marshalled list of (name, code object)) and calls setup(worker_id, n_workers, emit, sleep, group) of the last one. Workers kept in the reserve are taken first, unless fresh. Blocks until all are ready; releases the GIL meanwhile.
        """
    def busy_workers(self) -> list[int]:
        """
        The ids of the workers still running the current run.
        """
    def close(self, timeout: typing.SupportsFloat | typing.SupportsIndex) -> list:
        """
        Interrupt running tasks and end every worker within about `timeout` seconds, GIL released; workers that have not ended by then (blocked in C code, swallowing KeyboardInterrupt, or with threads of their own still running) are abandoned: left running, never joined. Returns them as (worker_id, why). A KeyboardInterrupt meanwhile abandons at once and propagates. Harmless twice.
        """
    def collect(self) -> typing.Any:
        """
        The finished run's result records (ipy_parallel/_wire/protocol.py), one per worker: the same list every time until the next start().
        """
    def cpu_times(self) -> list[float]:
        """
        CPU seconds used so far by each worker's thread (read without stopping them).
        """
    def drain_output(self) -> list:
        """
        Output written since the last call, as (worker_id, stream, text); stream 1 is stdout, 2 stderr.
        """
    def interrupt(self) -> list[int]:
        """
        Raise KeyboardInterrupt in every worker still running: at its next bytecode, or at once in time.sleep. Returns their ids. A worker blocked in other C code stops when it returns.
        """
    def progress(self) -> list:
        """
        Per worker, (done, total or None) of its task's ipy_parallel.worker.progress(), or None if it made none; asks each running task for a fresh reading, which the next call returns (never blocks).
        """
    def release(self) -> None:
        """
        The caller has kept the finished run's records: drop the engine's (collect() then gives no more until the next start()).
        """
    def resize(self, n_workers: typing.SupportsInt | typing.SupportsIndex) -> list:
        """
        Between runs, grow to n_workers (the new ones start at once, GIL released) or shrink (the last ones end; any that cannot is abandoned and returned as (worker_id, why)). The workers that stay keep their interpreters and do not know the new size until told (the runtime's RESIZE). Raises RuntimeError if the pool is closed or a run has not finished.
        """
    def start(self, source: str, filename: str, payloads: list, stream: bool = False, wait: typing.SupportsFloat | typing.SupportsIndex = 0.0, lent: list = []) -> bool:
        """
        Hand one task to every worker, then wait up to `wait` seconds (GIL released) as wait() does; True when the run is already done. payloads: [] for no inputs, [b] for the same bytes everywhere, or one bytes per worker; stream: queue output for drain_output(); lent: [] or, for each payload, the list of objects it lends (ipy_parallel/_wire/protocol.py): a bytes or str is copied once into each worker, any other buffer is seen there in place, read-only, and released here once the workers' views of it are gone. Raises RuntimeError if the pool is closed or the previous run has not finished, BufferError if a buffer is not contiguous. Starting and waiting in one call spares a short run a GIL round trip.
        """
    def wait(self, timeout: typing.SupportsFloat | typing.SupportsIndex) -> bool:
        """
        Block up to timeout seconds, GIL released; True once every worker is done.
        """
    @property
    def abandoned(self) -> list:
        """
        (worker_id, why) of every worker close() gave up on.
        """
    @property
    def busy(self) -> bool:
        """
        A run was started and has not finished.
        """
    @property
    def closed(self) -> bool:
        ...
    @property
    def closed_for_fork(self) -> bool:
        """
        Closed by the hook that runs before os.fork(), not by close(): it may start again.
        """
    @property
    def group(self) -> int:
        """
        This pool's id in the process: its workers' barrier
        """
    @property
    def resizable(self) -> bool:
        """
        resize() works (the Engine protocol, ipy_parallel/backends/engine.py).
        """
    @property
    def runs(self) -> int:
        ...
    @property
    def size(self) -> int:
        ...
class LockHold:
    def __enter__(self) -> None:
        """
        Acquire the lock, waiting as lock.acquire() does (a Ctrl-C meanwhile raises, not held).
        """
    def __exit__(self, *args) -> bool:
        ...
    def __init__(self, lock: typing.Any) -> None:
        """
        One `with` of `lock` (a threading.Lock) that an interrupt at any instant cannot leave held: the acquire is noted in C, and if the with statement is interrupted before its block (CPython gh-148874, 3.14) the object is dropped and releases the lock (native/lock_hold.h).
        """
class CondvarFloor:
    def __init__(self, n_threads: typing.SupportsInt | typing.SupportsIndex, spin_micros: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
        """
        The latency floor: n_threads bare C++ threads sleeping on condition variables. With spin_micros, the waiter first yields that long, as the pool's does.
        """
    def round_trips(self, iterations: typing.SupportsInt | typing.SupportsIndex) -> list[float]:
        """
        Seconds per round trip: wake every thread and wait for all to answer.
        """
def _fail_next_creations(count: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Test only: the next `count` interpreter creations fail as CPython's transient failure does.
    """
def _hold_gil(seconds: typing.SupportsFloat | typing.SupportsIndex) -> None:
    """
    Test only: keep the calling interpreter's GIL for `seconds`, letting nothing else run in it.
    """
def barrier_abort(group: typing.SupportsInt | typing.SupportsIndex, why: str) -> None:
    """
    Break the barrier of pool `group` until its next run.
    """
def barrier_arrive(group: typing.SupportsInt | typing.SupportsIndex, parties: typing.SupportsInt | typing.SupportsIndex) -> int:
    """
    Arrive at the barrier of pool `group`; returns a ticket for barrier_wait. Raises threading.BrokenBarrierError if a worker of the run raised or finished first.
    """
def barrier_excuse(group: typing.SupportsInt | typing.SupportsIndex, rank: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Worker `rank` is not one of this run's targets: no party to its barrier.
    """
def barrier_wait(group: typing.SupportsInt | typing.SupportsIndex, ticket: typing.SupportsInt | typing.SupportsIndex, timeout: typing.SupportsFloat | typing.SupportsIndex) -> bool:
    """
    Wait up to timeout seconds, GIL released: True once all parties arrived. Raises threading.BrokenBarrierError if the barrier broke.
    """
def clear_reserve() -> int:
    """
    End every kept worker's interpreter; returns how many. Blocks until they have, GIL released.
    """
def close_all_pools() -> None:
    """
    Close every open pool.
    """
def interpreters_alive() -> int:
    """
    Sub-interpreters created by the engine and not ended (parked in the reserve, left alive, or of abandoned workers).
    """
def prepare_main_interpreter() -> None:
    """
    Do in the main interpreter what a pool's start does there before its workers run (import _datetime, and the like: see compat.h); a new Engine does it too. Call it first where a pool is started in another thread, so that thread adds no module to sys.modules.
    """
def queue_clear(name: str) -> int:
    """
    Drop every item of queue `name`; returns how many there were.
    """
def queue_get(name: str, timeout: typing.SupportsFloat | typing.SupportsIndex, spin: typing.SupportsFloat | typing.SupportsIndex = 0.0) -> typing.Any:
    """
    The oldest bytes of queue `name`, waiting up to timeout seconds with the GIL released; None if none came. With spin, first yields the CPU for up to that many seconds instead of blocking at once: cheaper when an item is about to come (a vCPU that halts is slow to wake).
    """
def queue_put(name: str, item: bytes) -> None:
    """
    Append bytes to the process-wide queue `name`.
    """
def queue_size(name: str) -> int:
    ...
def reserve_limit() -> int:
    """
    How many the reserve keeps at most.
    """
def reserve_size() -> int:
    """
    Ended workers kept alive, parked, for the next pool (see reserve.h).
    """
def seed_kernel(ns: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> list[int]:
    """
    The seed workload in C++: for each n, k = k * i % 1000000007 over i = n..2, each on its own std::thread, all at once, with the GIL released.
    """
def set_reserve_limit(limit: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Keep at most `limit` (0: none); those over it end now. Blocks until they have, GIL released.
    """
def set_stuck_exit_status(status: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    The status the process exits with if interpreters the engine could not end keep it from finalizing (1 unless set: an atexit hook cannot read the status the program was exiting with).
    """
def shared_drop(name: str) -> None:
    """
    Forget the bytes kept under `name`.
    """
def shared_get(name: str) -> typing.Any:
    """
    A copy of the bytes kept under `name`, or None.
    """
def shared_put(name: str, value: bytes) -> None:
    """
    Keep bytes under `name` for every interpreter of the process.
    """
POOL_SPIN_MICROS: int = 50
RAW_FORMAT: int = 2
SEED_KERNEL_MAX_N: int = 10000000000
