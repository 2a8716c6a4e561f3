"""gracectl's own interrupt handling (interrupts.py), with real signals sent to this process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

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


def test_a_shielded_step_finishes_then_the_signal_is_raised_even_over_its_own_error(installed):
    """A lock write is never abandoned mid-request (its late landing would leave the lock claimed): the signal
    waits for the step's end, then is raised there, also when the step failed, and never inside a deferred block."""
    steps = []
    with pytest.raises(Interrupted) as caught:
        with interrupts.shielded():
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(1000):
                pass
            steps.append("finished")
    assert steps == ["finished"] and caught.value.exit_code == 129
    interrupts.restore({})
    with pytest.raises(Interrupted) as caught:
        with interrupts.shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            raise GraceError("the write failed")
    assert caught.value.exit_code == 143 and isinstance(caught.value.__context__, GraceError)
    interrupts.restore({})
    with interrupts.deferred():  # the outer block decides: noted, not raised
        with interrupts.shielded():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    assert interrupts.take().exit_code == 130


def test_after_an_operation_held_its_outcome_the_next_one_is_interruptible_again(installed):
    """The rehearsal runs several promotions in one process, each in an operation(): a signal noted while one
    reported its outcome stops the run at the next one's start, and the holds end with their operation."""
    with interrupts.operation():
        interrupts.hold()  # a promotion moved its tag
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass  # noted, not raised: the outcome is being reported
    with pytest.raises(Interrupted) as caught:
        with interrupts.operation():
            pytest.fail("the next operation started although a signal was noted")
    assert caught.value.exit_code == 143


def test_holds_end_with_their_operation_so_the_next_signal_raises(installed):
    with interrupts.operation():
        interrupts.hold()
        interrupts.hold()
    with interrupts.operation():
        pass  # nothing noted: goes on
    with pytest.raises(Interrupted):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass


def test_an_interrupt_unwinding_an_operation_keeps_signals_noted(installed):
    """Unwinding keeps the hold the raise made: a second signal never cuts the clean-up outside short."""
    with pytest.raises(Interrupted):
        with interrupts.operation():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
        pass  # noted, not raised
    assert interrupts.take().exit_code == 130


def test_an_operation_inside_a_held_outcome_never_raises_a_noted_signal(installed):
    interrupts.hold()  # the outcome is decided (the CLI's end)
    os.kill(os.getpid(), signal.SIGHUP)
    for _ in range(1000):
        pass
    with interrupts.operation():
        pass
    assert interrupts.take().exit_code == 129


def test_one_signal_is_raised_and_the_next_ones_are_noted_while_it_unwinds(installed):
    """A second Ctrl-C never cuts the first one's clean-up (a lock's release, a tag's read-back) short, nor
    replaces the outcome it carries."""
    with pytest.raises(Interrupted) as first:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
        pass  # not raised: noted
    assert first.value.exit_code == 143
    assert interrupts.take().exit_code == 130


def test_helper_threads_never_receive_the_signals(installed):
    masks = []
    thread = threading.Thread(target=lambda: masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
    interrupts.start_thread(thread)
    thread.join()
    assert set(interrupts.SIGNALS) <= masks[0]
    assert not set(interrupts.SIGNALS) & signal.pthread_sigmask(signal.SIG_BLOCK, [])  # the main thread's: as was


def finishing(body: str) -> subprocess.CompletedProcess:
    """A process that installs the handlers, runs `body`, then ends with interrupts.finish(3)."""
    code = "import os, signal\nfrom gracectl import interrupts\ninterrupts.install()\n" + textwrap.dedent(body) + \
        "\nprint('result line', flush=True)\ninterrupts.finish(3)\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("body", [
    "interrupts.hold(); os.kill(os.getpid(), signal.SIGTERM)",  # noted while the outcome was being reported
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); os.kill(os.getpid(), signal.SIGTERM)",  # pending
    """
    class Swallowing:  # raised inside a __del__: Python prints "Exception ignored" and carries on
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
    Swallowing()
    """,
])
def test_finish_says_a_late_signal_and_exits_with_the_outcome_code(body):
    result = finishing(body)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "result line\n"
    assert result.stderr.strip().splitlines()[-1] == ("warning: terminated (SIGTERM) came after the outcome was "
                                                      "decided: the result above stands")


def test_finish_with_no_signal_says_nothing():
    result = finishing("")
    assert (result.returncode, result.stdout, result.stderr) == (3, "result line\n", "")
