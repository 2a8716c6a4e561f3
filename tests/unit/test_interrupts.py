"""gracectl's own interrupt handling (interrupts.py), with real signals sent to this process."""

from __future__ import annotations

import os
import signal

import pytest

from gracectl import interrupts
from gracectl.errors import GraceError, Interrupted


@pytest.fixture()
def installed():
    previous = interrupts.install()
    yield
    interrupts.restore(previous)
    assert signal.getsignal(signal.SIGINT) is previous[signal.SIGINT]  # nothing left behind


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_is_an_interrupt_no_error_handler_swallows(installed, sig, code):
    with pytest.raises(Interrupted) as caught:
        try:
            os.kill(os.getpid(), sig)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
        except GraceError:  # what code catches to carry on must not catch an interrupt
            pytest.fail("an interrupt was caught as a GraceError")
    assert caught.value.exit_code == code


def test_inside_a_deferred_block_a_signal_is_noted_then_taken_once(installed):
    with interrupts.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    taken = interrupts.take()
    assert isinstance(taken, Interrupted) and taken.exit_code == 143 and "SIGTERM" in str(taken)
    assert interrupts.take() is None


def test_after_an_operation_held_its_outcome_the_next_one_is_interruptible_again(installed):
    """The rehearsal runs several promotions in one process: a signal noted while one finished stops the run at
    the next step (resume), and after it signals raise again."""
    interrupts.hold()  # a promotion moved its tag
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):
        pass  # noted, not raised: the outcome is being reported
    with pytest.raises(Interrupted) as caught:
        interrupts.resume()
    assert caught.value.exit_code == 143
    interrupts.resume()  # nothing noted: goes on
    with pytest.raises(Interrupted):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
