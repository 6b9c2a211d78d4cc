# -*- test-case-name: tests.test_tap -*-
"""
The broker's lifecycle as a Twisted service.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mqttbroker.broker import Broker
from mqttbroker.interfaces import IPersistence
from mqttbroker.persistence import Journal, PersistenceError, Snapshot

__all__ = [
    "BackendsService",
    "BrokerService",
    "CollectorService",
    "PersistenceService",
    "ReloadService",
    "ReloadThen",
    "Reloadable",
]

_log = Logger()


class CollectorService(Service):
    """
    Runs CPython's cycle collector less often while the broker runs.

    Python collects its youngest generation every 700 new container objects (by
    default). A broker makes several short-lived objects per message (packets,
    deliveries, store records), nearly all freed by reference counting, so the
    collector mostly scans objects that are about to go anyway: at tens of thousands
    of messages a second that was a fifth of the broker's CPU time. A larger
    threshold keeps cyclic garbage a little longer (at most C{threshold} objects more)
    for far fewer scans. The older generations keep their thresholds.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._saved: tuple[int, int, int] | None = None

    def startService(self) -> None:
        super().startService()
        if self.threshold:
            self._saved = gc.get_threshold()
            gc.set_threshold(self.threshold, *self._saved[1:])

    def stopService(self) -> None:
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
        super().stopService()


class BrokerService(Service):
    """
    Owns a L{Broker} for the time the application runs.

    Add it to the application before the listeners: a L{MultiService} stops its
    children in reverse order, so the listeners stop accepting first and then this
    service closes the connections that remain.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def stopService(self) -> None:
        super().stopService()
        self.broker.shutdown()


class Reloadable(Protocol):
    """Something that rereads its files: TLS certificates (and, later, passwords)."""

    def reload(self) -> bool: ...

    def reload_if_changed(self) -> bool: ...


class ReloadThen:
    """A reloadable that runs C{after} when it did reload (an ACL: recheck)."""

    def __init__(self, target: Reloadable, after: Callable[[], object]) -> None:
        self.target = target
        self.after = after

    def reload(self) -> bool:
        done = self.target.reload()
        if done:
            self.after()
        return done

    def reload_if_changed(self) -> bool:
        done = self.target.reload_if_changed()
        if done:
            self.after()
        return done


class ReloadService(Service):
    """
    Rereads files without a restart: everything on SIGHUP, and each one when it
    changes on disk (checked every C{interval} seconds; 0 turns the check off), so
    that a renewed certificate is picked up even where nobody sends a signal.
    """

    def __init__(
        self, reloadables: list[Reloadable], clock: IReactorTime, interval: float = 10.0
    ) -> None:
        self.reloadables = reloadables
        self.clock = clock
        self.interval = interval
        self._check: LoopingCall | None = None
        self._previous_handler: object = None

    def startService(self) -> None:
        super().startService()
        if not self.reloadables:
            return
        if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGHUP, self._on_sighup)
        if self.interval > 0:
            self._check = LoopingCall(self.reload_changed)
            self._check.clock = self.clock
            self._check.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._check is not None and self._check.running:
            self._check.stop()
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)  # type: ignore[arg-type]
            self._previous_handler = None

    def _on_sighup(self, signum: int, frame: object) -> None:
        # A signal handler runs between bytecodes; do the work in the reactor.
        from twisted.internet import reactor  # noqa: PLC0415

        reactor.callFromThread(self.reload)  # type: ignore[attr-defined]

    def reload(self) -> None:
        """Reread every file now (what SIGHUP does)."""
        _log.info(
            "Reloading {count} configuration file set(s) (TLS, users, ACLs)",
            count=len(self.reloadables),
        )
        for reloadable in self.reloadables:
            reloadable.reload()

    def reload_changed(self) -> None:
        """Reread the files that changed on disk."""
        for reloadable in self.reloadables:
            reloadable.reload_if_changed()


class BackendsService(Service):
    """Closes the authentication and authorization backends that hold resources
    (an HTTP hook's kept-alive connections) when the broker stops."""

    def __init__(self, backends: list[object]) -> None:
        self.backends = backends

    def stopService(self) -> object:
        super().stopService()
        closing = []
        for backend in self.backends:
            close = getattr(backend, "close", None)
            if close is not None:
                closing.append(maybeDeferred(close))
        return DeferredList(closing) if closing else None


def _stop_process() -> None:
    """
    Stop the reactor, and once everything has shut down, leave with status 1:
    C{twist} itself would exit 0, and a service manager (systemd, a container
    runtime) would take a broker that never started for one that ended normally.
    """
    from twisted.internet import reactor  # noqa: PLC0415

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    reactor.addSystemEventTrigger("after", "shutdown", leave)
    reactor.stop()


class PersistenceService(MultiService):
    """
    Takes the broker's state back from its store before anything else starts (its
    children, the listeners among them, start only once the store is loaded), and
    commits what is left and closes the store after they have stopped.
    """

    def __init__(
        self,
        broker: Broker,
        store: IPersistence,
        journal: Journal,
        give_up: Callable[[], object] | None = None,
    ) -> None:
        super().__init__()
        self.broker = broker
        self.store = store
        self.journal = journal
        #: Called when the store cannot be loaded: by default the process stops,
        #: with exit status 1 for the service manager to see.
        self.give_up = give_up if give_up is not None else _stop_process
        #: Fires once the store is loaded and the children started (for tests).
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        Service.startService(self)
        loading: Deferred[Any] = maybeDeferred(self.store.load)
        loading.addCallback(self._loaded)
        loading.addErrback(self._failed)

    def _loaded(self, snapshot: Snapshot) -> None:
        self.broker.restore(snapshot)
        owed = sum(len(s.deliveries) for s in snapshot.sessions)
        _log.info(
            "Loaded {sessions} session(s), {owed} message(s) owed to them and "
            "{retained} retained message(s) from the store",
            sessions=len(snapshot.sessions),
            owed=owed,
            retained=len(snapshot.retained),
        )
        for service in self:
            service.startService()
        self.ready.callback(None)

    def _failed(self, failure: Failure) -> None:
        if failure.check(PersistenceError):
            # The store says what is wrong (unreachable, damaged, which record): no
            # traceback in the way of that.
            _log.error(
                "Could not load the broker's state from its store; stopping: {error}",
                error=failure.getErrorMessage(),
            )
        else:
            _log.failure("Could not load the broker's state from its store; stopping", failure)
        self.ready.errback(failure)
        # Said above; not "unhandled" again when nobody waited for it.
        self.ready.addErrback(lambda _: None)
        self.give_up()

    def stopService(self) -> Deferred[None]:
        stopping: Deferred[Any]
        if any(service.running for service in self):
            stopping = maybeDeferred(super().stopService)
        else:
            # The store never loaded: the children never started, and a listening
            # service that never started cannot be stopped.
            Service.stopService(self)
            stopping = maybeDeferred(lambda: None)

        def flushed(_: object) -> Deferred[Any]:
            # What the shutdown itself changed (wills, detached sessions) is kept.
            return self.journal.durable().addBoth(lambda _: self.store.close())

        return stopping.addBoth(flushed)
