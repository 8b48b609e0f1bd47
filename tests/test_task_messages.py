"""Messages from tasks to the stage (pipeline.task_messages): what a task passes to
``Workers.relay``, from any of its threads, reaches ``on_message`` in the submitting process,
in-process, from a process pool (a queue) and from dask workers (worker events, throttled)."""

import threading
import time

import pytest

from pipeline.parallel import open_executor


def _talk(relay, messages, linger):
    """A task that sends from a thread of its own (as the extraction's model thread does)."""
    sender = threading.Thread(target=lambda: [relay(*m) for m in messages])
    sender.start()
    sender.join()
    time.sleep(linger)  # the messages go before the result
    return len(messages)


def _received(scheduler, messages, linger=0.0):
    got = []
    with open_executor(scheduler, on_message=lambda *m: got.append(m)) as workers:
        assert workers.executor.submit(_talk, workers.relay, messages, linger).result() == len(messages)
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    return got


MESSAGES = [("clip00", 4), ("clip00", 8), ("clip01", 4)]


def test_no_handler_no_relay():
    with open_executor("processes:1") as workers:
        assert workers.relay is None


def test_in_process_the_relay_is_the_handler():
    assert _received("inprocess", MESSAGES) == MESSAGES


def test_a_pool_task_relays_every_message_in_order():
    assert _received("processes:2", MESSAGES) == MESSAGES


@pytest.mark.slow
def test_a_dask_task_relays_at_most_one_message_per_key_and_second():
    got = _received("local:1", MESSAGES, linger=0.5)
    assert sorted(got) == [("clip00", 4), ("clip01", 4)]  # ("clip00", 8) came within the second
