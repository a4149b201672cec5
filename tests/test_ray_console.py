"""The console filter on lines recorded from real runs (Ray 2.60, this repository's training).

The helper-process crash is intermittent, so nothing here provokes it: its report is the one a Ray
worker wrote on this machine (worker-*.err of a pooled task worker exiting idle).
"""

from __future__ import annotations

import logging

import pytest

from ssd_ray.ray_console import ConsoleFilter, _hook_worker_stream, _LogRecordFilter

# Console lines of a successful `pipelines.train` run, without Ray's "(name pid=N)" prefix.
RESTART_NOTICES = [
    "[2026-12-02 00:29:35,124 E 15685 15728] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' "
    "and ID: 'db051c1377be49b2389bb7c901000000' has constructor arguments in the object store and "
    "max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor restart "
    "will fail. See https://github.com/ray-project/ray/issues/53727 for more details.",
    "[2026-12-02 00:29:48,826 E 16016 16893] core_worker.cc:2465: Actor with class name: "
    "'MapWorker(MapBatches(TrainSampleMaker))' and ID: 'd033a44906c5d4f8b7cfbc0001000000' has constructor "
    "arguments in the object store and max_restarts > 0. If the arguments in the object store go out of "
    "scope or are lost, the actor restart will fail. See https://github.com/ray-project/ray/issues/53727 "
    "for more details.",
]
TOKEN_NOTICE = ("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out. "
                "For more information, see https://docs.ray.io/en/latest/ray-security/token-auth.html")
WORKER_LINES = [  # must always reach the console
    "training tiny12: iterations 0 -> 8, 1 worker(s) x 4 images, device cpu",
    "iter 8/8  loss 10.5580 (loc 4.5060 conf 6.0520)  lr 0.003  82.7 img/s  data 1%  eta 0m00s",
    "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/tmp/runs/x/checkpoint_00000008)",
    "Failed to send resource request for train-481abf8cfffb4dc1b6f53fc978d5183b. If this only happens "
    "transiently during network partition or CPU being overloaded, it's safe to ignore this error.",
    "Traceback (most recent call last):",
    "ray.exceptions.GetTimeoutError: Get timed out: some object(s) not ready.",
    "Warning: The Ray cluster currently does not have any available CPUs.",
]
CRASH_REPORT = [  # worker-...-6268.err: a get_table_block_metadata_schema worker exiting idle
    "[mutex.cc : 452] RAW: Lock blocking 0x55cf1c74b480   @ 0x7fdf1fa2b1a2 0x7fdf1eafb23c 0x7fdf1f3c2022 0x7fdf1fa4c3b0",
    "[mutex.cc : 1954] RAW: Check (v & (kMuWriter | kMuReader)) != (kMuWriter | kMuReader) failed: Lock: Mutex "
    "corrupt: both reader and writer lock held: 0xffffffff4affffff",
    "*** SIGABRT received at time=1796170828 on cpu 0 ***",
    "PC: @     0x7fdf206a8eec  (unknown)  (unknown)",
    "    @     0x7fdf2065a050       9360  (unknown)",
    "    @     0x7fdeec008cc0  (unknown)  (unknown)",
    "[2026-12-02 00:20:29,991 E 6268 6725] logging.cc:474: *** SIGABRT received at time=1796170829 on cpu 0 ***",
    "[2026-12-02 00:20:30,191 E 6268 6725] logging.cc:474: PC: @     0x7fdf206a8eec  (unknown)  (unknown)",
    "Fatal Python error: Aborted",
    "",
    "",
    "Extension modules: msgpack._cmsgpack, google._upb._message, psutil._psutil_linux, yaml._yaml, ray._raylet, "
    "numpy._core._multiarray_umath, pyarrow.lib, pyarrow._json (total: 74)",
]


def _batch(pid, lines, **kw):
    return {"pid": pid, "lines": list(lines), "is_err": True, "ip": "192.0.2.2", "localhost": "192.0.2.2", **kw}


def test_harmless_notices_are_dropped_and_the_rest_kept():
    cf = ConsoleFilter()
    out = cf.filter_worker_batch(_batch(15685, [RESTART_NOTICES[0], *WORKER_LINES], actor_name="TrainController"))
    assert out["lines"] == WORKER_LINES and out["actor_name"] == "TrainController"
    assert cf.filter_worker_batch(_batch(16016, RESTART_NOTICES[1:])) is None  # nothing left: nothing printed
    assert cf.dropped == {"actor-restart notice": 2}
    assert not cf.keep(TOKEN_NOTICE)
    # The notice when token auth is *off* is a warning that matters: kept.
    assert cf.keep("Token authentication is disabled for this Ray cluster. Anyone with network access to the "
                   "cluster can run arbitrary code and access its data.")


def test_crash_reports_are_shown_until_the_run_has_succeeded():
    cf = ConsoleFilter()
    # During a run a crash is news: every line stays.
    assert cf.filter_worker_batch(_batch(6268, CRASH_REPORT))["lines"] == CRASH_REPORT
    cf.set_run_succeeded()
    # After success, the report of a helper process is kept off the console from its first line on...
    assert cf.filter_worker_batch(_batch(6300, CRASH_REPORT[:5], task_name="get_table_block_metadata_schema")) is None
    assert cf.filter_worker_batch(_batch(6300, CRASH_REPORT[5:])) is None  # ... across batches
    assert cf.dropped["helper-process crash after the run"] == len(CRASH_REPORT)
    # ... while other processes' lines, and this process's own log records, still pass.
    assert cf.filter_worker_batch(_batch(16016, WORKER_LINES))["lines"] == WORKER_LINES
    assert cf.keep("Fatal Python error: Aborted")  # the driver's own (source None) is never hidden


def test_log_record_filter_drops_the_token_notice():
    cf = ConsoleFilter()
    f = _LogRecordFilter(cf)
    rec = logging.LogRecord("ray._private.authentication.authentication_token_setup", logging.WARNING, __file__,
                            85, TOKEN_NOTICE, None, None)
    assert not f.filter(rec)
    other = logging.LogRecord("ray", logging.WARNING, __file__, 1, "Cluster resources are not enough to run "
                              "the task %s", ("x",), None)
    assert f.filter(other)


def test_hook_wraps_rays_printer(monkeypatch):
    """The hook replaces Ray's `ray_print_logs` handler with one that filters, then calls Ray's printer."""
    ray_logging = pytest.importorskip("ray._private.ray_logging")
    dispatcher = ray_logging.global_worker_stdstream_dispatcher
    monkeypatch.setattr(dispatcher, "handlers", [])
    printed = []
    dispatcher.add_handler("ray_print_logs", printed.append)
    cf = ConsoleFilter()
    _hook_worker_stream(cf)
    _hook_worker_stream(cf)  # idempotent: one filter, not two
    assert len(dispatcher.handlers) == 1
    dispatcher.emit(_batch(16016, [RESTART_NOTICES[1], WORKER_LINES[0]]))
    dispatcher.emit(_batch(16016, RESTART_NOTICES[:1]))
    assert [b["lines"] for b in printed] == [[WORKER_LINES[0]]]


# ------------------------------------------------------------------ the driver's own stderr (fd 2)
DRIVER_NOTICE = ("[2026-12-02 00:59:12,473 E 10135 10135] core_worker.cc:2465: Actor with class name: "
                 "'MapWorker(MapBatches(_DetectActor))' and ID: '0ba1af77dc1d6c4668ad446601000000' has constructor "
                 "arguments in the object store and max_restarts > 0. If the arguments in the object store go out "
                 "of scope or are lost, the actor restart will fail. See "
                 "https://github.com/ray-project/ray/issues/53727 for more details.")


def test_filter_stream_passes_partial_lines_and_drops_notices():
    import io
    import os

    r, w = os.pipe()
    os.write(w, f"starting\n{DRIVER_NOTICE}\nprogress 1/3\rprogress 2/3\rlast line, no newline".encode())
    os.close(w)
    out = io.BytesIO()
    from ssd_ray.ray_console import filter_stream

    with os.fdopen(r, "rb") as src:
        filter_stream(src, out)
    assert out.getvalue() == b"starting\nprogress 1/3\rprogress 2/3\rlast line, no newline"


@pytest.mark.parametrize("ending", ["stop", "exit", "killed"])
def test_driver_stderr_filter_in_a_real_process(tmp_path, ending):
    """What C++ writes to fd 2 goes through the filter process; nothing is lost when the driver stops
    it, exits normally, or is killed (the filter drains the pipe on its own)."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        from ssd_ray import ray_console
        ray_console.enable_driver_stderr_filter()
        ray_console.start_driver_stderr_filter()
        os.write(2, b"before\\n" + {DRIVER_NOTICE.encode()!r} + b"\\n")
        print("from python", file=sys.stderr)
        os.write(2, b"after\\n")
        if {ending!r} == "stop":
            ray_console.stop_driver_stderr_filter()
            os.write(2, b"restored\\n")
        elif {ending!r} == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.exit(3)
    """))
    # capture_output reads to the end of stderr, which the filter process holds until it has drained
    # the pipe: after a SIGKILL of the driver too.
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60, cwd=str(tmp_path),
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    err = proc.stderr.decode()
    assert proc.returncode == (-9 if ending == "killed" else 3)  # the exit status is the driver's own
    assert "core_worker.cc" not in err
    assert "before\n" in err and "from python\n" in err and "after\n" in err
    if ending == "stop":
        assert err.endswith("after\nrestored\n")
