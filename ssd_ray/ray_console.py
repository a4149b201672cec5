"""What Ray prints on the driver's console, minus messages known to be harmless.

A run's console should carry ssd-ray's own lines and the Ray warnings that matter. Ray 2.60 adds:

- the *actor-restart notice*, `core_worker.cc:<n>: Actor with class name: '...' ... has constructor
  arguments in the object store and max_restarts > 0 ...` (ray-project/ray#53727), logged at ERROR
  for every Ray Data actor pool whose callable has large arguments (ours hold the dataset's records).
  It warns that a restarted actor could not get its arguments back if they were lost; ssd-ray keeps
  the records alive for the whole run, so it never applies;
- the *token notice*, `Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled
  to opt out`, printed whenever ssd-ray starts a local Ray (token authentication is what we want there);
- *helper-process crashes at exit*: a Ray worker process leaving the pool (idle, or at shutdown) can
  abort in Ray's own exit path (`[mutex.cc] RAW: ... Mutex corrupt`, `*** SIGABRT received`,
  `Fatal Python error: Aborted` and a list of extension modules; see docs/design.md, "Ray at exit").
  After a run has succeeded these say nothing about it.

`ConsoleFilter` decides line by line; `install` hooks it into the driver: Ray's worker-log stream
(`log_to_driver`) and the Ray loggers of this process. Ray's C++ code in the driver itself (the
actor-restart notice when the driver creates a Ray Data actor pool, as evaluation does) writes to file
descriptor 2 directly; entry points opt in (`enable_driver_stderr_filter`, from `cli.setup_logging`)
to route that descriptor through a small filter process (`DriverStderrFilter`) while Ray runs.
Dropped lines stay in Ray's log files under the session folder (`<temp dir>/session_*/logs/
worker-*.err`, `python-core-*.log`); nothing else is hidden (a crash before or during a run is
shown), and exit statuses are never changed.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import sys
import threading
from collections import Counter

__all__ = ["ConsoleFilter", "DriverStderrFilter", "install", "install_logging_only", "mark_run_succeeded",
           "console_filter", "enable_driver_stderr_filter", "filter_stream"]

# (what, pattern): lines that are harmless whenever they appear.
HARMLESS: tuple[tuple[str, re.Pattern], ...] = (
    ("actor-restart notice", re.compile(
        r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store "
        r"and max_restarts > 0")),
    ("token notice", re.compile(
        r"Token authentication is enabled for this Ray cluster\. Set RAY_AUTH_MODE=disabled to opt out")),
)

# The first line of a Ray helper process's crash report (abseil's raw log, Ray's signal handler,
# Python's faulthandler). Everything that process prints afterwards belongs to the report.
CRASH_START = re.compile(
    r"^\[mutex\.cc : \d+\] RAW: "
    r"|\*\*\* SIG[A-Z]+ received at time="
    r"|^Fatal Python error: ")


class ConsoleFilter:
    """Line-by-line decisions; thread-safe (Ray's log thread and the main thread both call it)."""

    def __init__(self) -> None:
        self.run_succeeded = False
        self.dropped: Counter = Counter()  # what -> lines kept off the console
        self._crashed: set = set()  # sources (pids) whose crash report is being dropped
        self._lock = threading.Lock()

    def new_session(self) -> None:
        """A new Ray session (init_ray again in the same process): its crashes are news again."""
        with self._lock:
            self.run_succeeded = False
            self._crashed.clear()

    def set_run_succeeded(self) -> None:
        """From now on, crash reports of Ray helper processes are kept off the console."""
        with self._lock:
            self.run_succeeded = True

    def keep(self, line: str, source=None) -> bool:
        """Whether `line` (one console line, without Ray's `(name pid=N)` prefix) from `source` (the
        pid of the Ray process that printed it; None for this process's own log records) is shown."""
        with self._lock:
            for what, pattern in HARMLESS:
                if pattern.search(line):
                    self.dropped[what] += 1
                    return False
            if source is None or not self.run_succeeded:
                return True
            if source in self._crashed or CRASH_START.search(line):
                self._crashed.add(source)
                self.dropped["helper-process crash after the run"] += 1
                return False
            return True

    def filter_worker_batch(self, data: dict) -> dict | None:
        """A batch of Ray's worker-log stream (`{"pid", "lines", ...}`) with the dropped lines taken
        out, or None when nothing is left."""
        source = data.get("pid") or "?"  # every streamed line comes from another Ray process
        lines = data.get("lines", [])
        kept = [ln for ln in lines if self.keep(ln, source)]
        if not kept:
            return None
        return data if len(kept) == len(lines) else {**data, "lines": kept}

    def summary(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in sorted(self.dropped.items()))


class _LogRecordFilter(logging.Filter):
    def __init__(self, cf: ConsoleFilter):
        super().__init__()
        self.cf = cf

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return self.cf.keep(record.getMessage())
        except Exception:  # noqa: BLE001 - a filter must never lose a record over a formatting problem
            return True


_FILTER: ConsoleFilter | None = None
_RAY_LOGGERS = ("ray", "ray._private.authentication.authentication_token_setup")


def console_filter() -> ConsoleFilter | None:
    """The installed filter, if any."""
    return _FILTER


def install_logging_only() -> ConsoleFilter:
    """The logging part of `install`, to call before `ray.init` (which logs the token notice)."""
    global _FILTER
    if _FILTER is None:
        _FILTER = ConsoleFilter()
        record_filter = _LogRecordFilter(_FILTER)
        for name in _RAY_LOGGERS:  # logger filters do not inherit: Ray's module logger gets its own
            logging.getLogger(name).addFilter(record_filter)
    return _FILTER


def install() -> ConsoleFilter:
    """Hook the filter into this driver (idempotent; call right after `ray.init`).

    - Ray's Python loggers in this process (the token notice) get a logging filter;
    - Ray's worker-log stream: the handler that prints `log_to_driver` batches is replaced by one that
      filters them first and then calls Ray's own printer (same prefixes, colours, de-duplication).
    """
    cf = install_logging_only()
    cf.new_session()
    _hook_worker_stream(cf)
    return cf


def _hook_worker_stream(cf: ConsoleFilter) -> None:
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # pragma: no cover - a Ray whose internals moved: print as Ray does
        return
    found = [h for name, h in getattr(dispatcher, "handlers", None) or () if name == "ray_print_logs"]
    if len(found) != 1 or getattr(found[0], "_ssd_ray_filtered", False):
        return  # log_to_driver off, already hooked, or internals that differ: leave Ray's printing alone
    original = found[0]

    def filtered(data):
        kept = cf.filter_worker_batch(data)
        if kept is not None:
            original(kept)

    filtered._ssd_ray_filtered = True  # type: ignore[attr-defined]
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", filtered)


def mark_run_succeeded() -> None:
    """Tell the installed filter the run succeeded (helper crashes at exit are then kept quiet)."""
    if _FILTER is not None:
        _FILTER.set_run_succeeded()


# --------------------------------------------------------------------------- the driver's own stderr
_DRIVER_STDERR_ENABLED = False
_DRIVER_STDERR: "DriverStderrFilter | None" = None


def enable_driver_stderr_filter() -> None:
    """Opt in (entry points do, from `cli.setup_logging`): `init_ray` then filters fd 2 while Ray runs."""
    global _DRIVER_STDERR_ENABLED
    _DRIVER_STDERR_ENABLED = True


def start_driver_stderr_filter() -> None:
    """Start the fd-2 filter if opted in and not running (init_ray, before `ray.init`)."""
    global _DRIVER_STDERR
    if _DRIVER_STDERR_ENABLED and _DRIVER_STDERR is None:
        _DRIVER_STDERR = DriverStderrFilter()
        if not _DRIVER_STDERR.start():
            _DRIVER_STDERR = None


def stop_driver_stderr_filter() -> None:
    """Give fd 2 back and let the filter process drain (finish_ray, and at exit)."""
    global _DRIVER_STDERR
    if _DRIVER_STDERR is not None:
        _DRIVER_STDERR.stop()
        _DRIVER_STDERR = None


class DriverStderrFilter:
    """File descriptor 2 of this process routed through `python -m ssd_ray.ray_console`, which drops
    the harmless lines and writes the rest to the original stderr.

    A separate process rather than a thread: if this process dies abruptly (a signal, a fatal error),
    the filter still reads everything written before to the end and passes it on, so the last lines
    before a crash are never lost. `stop` (also registered with atexit) restores fd 2 and waits for the
    filter to drain, so the output keeps its order with whatever follows.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.saved_fd: int | None = None

    def start(self) -> bool:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            read_end, write_end = os.pipe()
            self.proc = subprocess.Popen([sys.executable, "-m", "ssd_ray.ray_console"], stdin=read_end,
                                         stdout=saved, stderr=saved, close_fds=True,
                                         env={**os.environ, "PYTHONPATH": _package_path()})
            os.close(read_end)
            os.dup2(write_end, 2)
            os.close(write_end)
        except OSError:  # no pipes or processes to spare: keep the console as it is
            return False
        self.saved_fd = saved
        atexit.register(self.stop)
        return True

    def stop(self) -> None:
        if self.saved_fd is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.saved_fd, 2)  # this process no longer writes into the pipe: the filter sees its end
        os.close(self.saved_fd)
        self.saved_fd = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # another process still holds the pipe: let it go on its own
                pass


def _package_path() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder holding ssd_ray/
    return os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))


def filter_stream(src, dst, cf: ConsoleFilter | None = None) -> None:
    """Copy binary stream `src` to `dst` line by line, leaving out harmless lines (the filter process).

    Text without a final newline (a prompt, a progress bar's `\r` update) is passed on as it comes,
    so nothing waits for a newline that never arrives.
    """
    cf = cf or ConsoleFilter()
    fd = src.fileno()
    pending = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = [ln + b"\n" for ln in lines if cf.keep(ln.decode("utf-8", "replace"))]
        if pending and b"\r" in pending:  # in-place updates: pass them on now
            cut = pending.rindex(b"\r") + 1
            out.append(pending[:cut])
            pending = pending[cut:]
        if out:
            dst.write(b"".join(out))
            dst.flush()
    if pending and cf.keep(pending.decode("utf-8", "replace")):
        dst.write(pending)
        dst.flush()


if __name__ == "__main__":  # the filter process of DriverStderrFilter
    import signal

    # Ctrl-C reaches the whole process group: the driver handles it, the filter keeps passing its
    # output on until the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    filter_stream(sys.stdin.buffer, sys.stdout.buffer)
