"""`python -m bench scale_out` leaves no worker behind when its driver dies mid-run: the workers run in sessions of
their own, so the bench kills every process the driver listed (bench/scale_out.py `_kill_leftovers`)."""

import subprocess
import sys
import time

from bench.scale_out import _kill_leftovers, _record_process


def test_the_processes_a_dead_driver_listed_are_killed_and_a_reused_pid_is_spared(tmp_path):
    # Stand-ins for a worker (a session leader whose command line names celery) and for an unrelated process that
    # happens to hold a listed pid (its command line names neither celery nor redis-server).
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "celery"], start_new_session=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        _record_process(tmp_path, worker)
        _record_process(tmp_path, stranger)
        _kill_leftovers(tmp_path)
        assert worker.wait(timeout=10) != 0
        time.sleep(0.2)
        assert stranger.poll() is None
        _kill_leftovers(tmp_path)  # again, with the worker gone: nothing to do, no error
    finally:
        for process in (worker, stranger):
            process.kill()
            process.wait()
