"""The benchmarks' completion probe, as module source written into each generated app.

A no-op task calls ``probe.hit()``; the benchmark sets a target and an event with
``probe.reset(n, event)`` and waits for the event: completions are counted in the worker's
own process, with no extra broker traffic.
"""

PROBE_SOURCE = '''
"""Counts completed jobs; the no-op task calls hit()."""
import time

times = []
target = 0
event = None


def reset(new_target, new_event):
    global target, event
    times.clear()
    target, event = new_target, new_event


def hit():
    times.append(time.perf_counter())
    if len(times) == target and event is not None:
        event.set()
'''
