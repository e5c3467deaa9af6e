"""The progress display: labelled ETA and elapsed time, figures of the latest item, lines that are never stale.

A fake clock drives the Reporter, so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import io

from rich.console import Console

from vitcli.engine.runtime.progress import Reporter, duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain(clock, interval=5.0):
    buffer = io.StringIO()
    return Reporter(console=Console(file=buffer, width=200), interval=interval, clock=clock), buffer


def test_duration_reads_as_a_length_of_time_not_a_clock_time():
    assert duration(0) == "0:00"
    assert duration(83.4) == "1:23"
    assert duration(3 * 3600 + 62) == "3:01:02"


def test_plain_lines_come_after_the_first_item_then_every_interval_with_current_figures():
    clock = Clock()
    log, buffer = plain(clock)
    reads = []

    def status(step):
        def read():
            reads.append(step)
            return f"loss {1 / step:.4f}"
        return read

    task = log.task("train", 10, per_item=32)
    for step in range(1, 11):
        clock.now += 1.0
        task.update(step, status(step))
    task.close()
    lines = buffer.getvalue().splitlines()
    # step 1 at once, then each line 5 s after the one before, and the last step
    assert [line.split()[1] for line in lines] == ["1/10", "6/10", "10/10"]
    assert reads == [1, 6, 10]  # the status is read only when a line is printed: no per-step sync
    assert "loss 0.1667" in lines[1]  # the loss of step 6 itself, not of an earlier step
    assert "32.0 img/s" in lines[1] and "elapsed 0:06" in lines[1] and "ETA 0:04" in lines[1]
    assert "elapsed 0:10" in lines[2]


def test_a_resumed_task_counts_from_where_it_was_and_adds_the_earlier_time():
    clock = Clock()
    log, buffer = plain(clock)
    task = log.task("train", 10, done=6, elapsed=60.0)
    clock.now += 2.0
    task.update(7)
    assert buffer.getvalue().startswith("train 7/10 (70%)")
    assert "elapsed 1:02" in buffer.getvalue() and "ETA 0:06" in buffer.getvalue()
    clock.now += 1.0
    task.close()
    assert task.seconds == 63.0
    assert buffer.getvalue().splitlines()[-1].startswith("train 7/10 (70%)")


def test_an_unknown_total_shows_a_count_and_no_eta():
    clock = Clock()
    log, buffer = plain(clock)
    with log.task("features", None) as task:
        clock.now += 2.0
        task.advance(64)
    assert buffer.getvalue().splitlines()[0] == "features 64 32.0 img/s elapsed 0:02"


def test_the_terminal_bar_is_there_from_the_start_and_inner_tasks_make_room_again():
    clock = Clock()
    buffer = io.StringIO()
    log = Reporter(console=Console(file=buffer, width=200, force_terminal=True, color_system=None), clock=clock)
    outer = log.task("train", 10, done=4, status="epoch 1/2")
    inner = log.task("eval", 100)
    clock.now += 1.0
    inner.advance(100)
    inner.close()
    assert len(log._progress.tasks) == 1  # the evaluation's bar went away, training's stays
    clock.now += 1.0
    outer.update(10, "epoch 2/2 loss 0.5000")
    outer.close()
    text = buffer.getvalue()
    assert "4/10" in text and "epoch 1/2" in text  # drawn before the first step of the resumed run
    assert "10/10" in text and "loss 0.5000" in text and "elapsed 0:02" in text


def test_a_disabled_reporter_prints_nothing_but_still_times():
    clock = Clock()
    buffer = io.StringIO()
    log = Reporter(enabled=False, console=Console(file=buffer), clock=clock)
    task = log.task("train", 3)
    clock.now += 4.0
    task.update(3)
    task.close()
    assert buffer.getvalue() == "" and task.seconds == 4.0


def test_without_a_terminal_a_task_done_within_a_second_prints_only_its_last_line():
    clock = Clock()
    log, buffer = plain(clock)
    with log.task("eval", 360) as task:
        for _ in range(3):
            clock.now += 0.1
            task.advance(120)
    assert buffer.getvalue().splitlines() == ["eval 360/360 (100%) 1200 img/s elapsed 0:00"]
