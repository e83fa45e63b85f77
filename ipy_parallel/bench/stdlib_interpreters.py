"""CPython's own interpreters as a contestant: the public concurrent.interpreters or, before 3.14, the private modules."""

from __future__ import annotations

import threading

from .runners import SEED_SOURCE


def public_interpreters():
    """CPython 3.14's concurrent.interpreters, or None before it (only the private module then);
    imported when a benchmark first asks."""
    try:
        from concurrent import interpreters
    except ImportError:
        return None
    return interpreters


def stdlib_label() -> str:
    """How the rows of CPython's own interpreters are named: which module they drive."""
    return "stdlib concurrent.interpreters" if public_interpreters() is not None else "stdlib _interpreters"


class StdlibInterpreters:
    """CPython's own interpreters, driven from one Python thread per interpreter (what a user can
    do without us). Warm: created and given seed_task beforehand. 3.14 has the public
    concurrent.interpreters, with its queues. Before it there is only the private module: 3.13
    calls it _interpreters and passes results through _interpqueues; 3.12 calls it
    _xxsubinterpreters, has no queues, and shares only bytes, so results travel marshalled through
    an _xxinterpchannels channel. `label` names what was used."""

    def __init__(self, n_interpreters: int):
        self.label = stdlib_label()
        self._queues = self._channels = None
        self._public = public_interpreters()
        if self._public is not None:
            self.queue = self._public.create_queue()
            self.ids = [self._public.create() for _ in range(n_interpreters)]
            for interp in self.ids:
                interp.prepare_main(queue=self.queue)
                interp.exec(SEED_SOURCE)
            return
        try:
            import _interpqueues
            import _interpreters
        except ImportError:  # 3.12
            import _xxinterpchannels
            import _xxsubinterpreters as _interpreters

            self._channels = _xxinterpchannels
            self._channel = _xxinterpchannels.create()  # the channel lives as long as this id object
            self.queue = int(self._channel)
            self.ids = [_interpreters.create(isolated=True) for _ in range(n_interpreters)]
            prelude = "import _xxinterpchannels, marshal\n"
        else:
            self._queues = _interpqueues
            self.queue = _interpqueues.create(0, 0, 1)  # unbounded, shareable data, unbound items removed
            self.ids = [_interpreters.create("isolated") for _ in range(n_interpreters)]
            prelude = "import _interpqueues\n"
        self._interpreters = _interpreters
        for iid in self.ids:
            self.exec(iid, SEED_SOURCE + prelude)

    def exec(self, iid, code: str) -> str | None:
        """Run code in one interpreter; None, or the formatted error."""
        if self._public is not None:
            try:
                iid.exec(code)
            except self._public.ExecutionFailed as exc:
                return str(exc)
            return None
        if self._queues is not None:
            err = self._interpreters.exec(iid, code)
            return None if err is None else err.formatted
        try:
            self._interpreters.run_string(iid, code)
        except Exception as exc:  # 3.12 raises RunFailedError
            return f"{type(exc).__name__}: {exc}"
        return None

    def seed(self, ns: list[int]) -> list[int]:
        errors = []

        def one(index: int, iid, n: int):
            if self._public is not None:
                code = f"queue.put(({index}, seed_task({n})))"
            elif self._queues is not None:
                # put(qid, obj, fmt, unboundop): 3.13.0's signature.
                code = f"_interpqueues.put({self.queue}, ({index}, seed_task({n})), 0, 1)"
            else:
                code = f"_xxinterpchannels.send({self.queue}, marshal.dumps(({index}, seed_task({n}))))"
            err = self.exec(iid, code)
            if err is not None:
                errors.append(err)

        workers = [threading.Thread(target=one, args=(i, iid, n)) for i, (iid, n) in enumerate(zip(self.ids, ns))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if errors:
            raise RuntimeError(f"the stdlib interpreters failed: {errors[0]}")
        if self._public is not None:
            pairs = sorted(self.queue.get() for _ in ns)
        elif self._queues is not None:
            pairs = sorted(self._queues.get(self.queue)[0] for _ in ns)
        else:
            import marshal

            pairs = sorted(marshal.loads(self._channels.recv(self._channel)) for _ in ns)
        return [value for _, value in pairs]

    def close(self) -> None:
        if self._public is not None:
            for interp in self.ids:
                interp.close()
            return
        if self._queues is not None:
            self._queues.destroy(self.queue)
        else:
            self._channels.destroy(self._channel)
        for iid in self.ids:
            self._interpreters.destroy(iid)
