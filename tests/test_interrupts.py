"""A Ctrl-C that Python swallows (raised inside a finalizer) is raised again at check()."""

from __future__ import annotations

import os
import signal
import sys
import threading
import weakref

import pytest

from lens import interrupts


class _Thing:
    pass


def test_a_swallowed_ctrl_c_is_raised_at_the_next_check(monkeypatch):
    swallowed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))
    with interrupts.remember_sigint():
        interrupts.check()  # nothing yet
        thing = _Thing()
        # The callback runs while the object dies; the KeyboardInterrupt raised in it is
        # printed as "Exception ignored" and lost, exactly as in a real pack.
        ref = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIGINT))
        del thing
        assert ref() is None
        assert swallowed == [KeyboardInterrupt]  # Python printed it and carried on
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    interrupts.check()  # forgotten when the block ends
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_it_does_nothing():
    errors = []

    def run():
        try:
            with interrupts.remember_sigint():
                interrupts.check()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors == []
