"""Ray start-up shared by training, evaluation, prediction and tuning (below all of them).

`init_ray` joins a cluster (`ray.address`, `--address` or RAY_ADDRESS) or starts a local Ray whose
dashboard binds to 127.0.0.1. Evaluation and tuning import it from here, so no layer needs to reach
into `ssd_ray.train` for it. It also keeps Ray's known-harmless console messages off the console
(`ssd_ray.ray_console`).

`finish_ray(succeeded)` ends what `init_ray` started, in the order that avoids Ray's exit crash: a
pooled Ray worker that leaves *gracefully* (idle for a second, which every task worker is once a
run's work is done) can abort in Ray 2.60's own exit path after its core worker is destroyed
("Mutex corrupt ... SIGABRT", a Ray bug; docs/design.md, "Ray at exit"). Workers still alive when a
local Ray is shut down are killed with it and never take that path, so drivers call `finish_ray`
as soon as they no longer need Ray, before their own post-run work (model files, MLflow uploads)
leaves the workers idle.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["init_ray", "finish_ray", "local_dashboard"]

_STARTED_HERE = False  # whether init_ray started the local Ray this process uses (finish_ray stops only that)
IDLE_WORKER_KEEP_MS = 30 * 60 * 1000  # a local Ray's idle pooled workers: kept, not exited (see above)
# Ray Train services a single machine does not need: each is a process or a poll loop competing with
# training for a laptop's cores (bench/cpu_share.py; docs/benchmarks.md "Where the CPU goes"). Set
# for a local Ray only, unless the user set them; finish_ray removes them again.
LOCAL_RAY_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",  # nothing drains the nodes of a one-machine Ray
    "RAY_TRAIN_METRICS_ENABLED": "0",  # Train's Prometheus metrics: no Prometheus scrapes a local run
}
_ENV_SET_HERE: list[str] = []


def local_dashboard(cfg) -> bool:
    """Whether a local Ray starts its dashboard: `ray.dashboard`, or by default everywhere but local mode.

    The dashboard (a head process, ~9 module processes and the state API) is what Train V2's
    placement-group cleaner asks whether a Train controller is alive; local mode (`ray.num_workers:
    0`) has no controller, so there it is off unless asked for: on 2 cores a 450-iteration local-mode
    run took 319 s with it and 291 s without (docs/benchmarks.md, "Demo in local mode").
    """
    r = getattr(cfg, "ray", None)
    if r is None:
        return True
    return r.dashboard if r.dashboard is not None else r.max_workers > 0


def init_ray(address: str | None = None, cfg=None, **local_kwargs) -> None:
    """Join the cluster at `address` (or `ray.address` / RAY_ADDRESS), else start a local Ray.

    A local Ray with a dashboard (`local_dashboard`) binds it to 127.0.0.1 on a free port and hands
    that URL to every worker (RAY_API_SERVER_ADDRESS): Train V2's placement-group cleaner asks the
    state API whether a Train controller is alive, and without the address a worker finds it by
    scanning the machine, which fails when another Ray runs there ("Found multiple active Ray
    instances"); the cleaner then dies and a stopped run keeps its CPUs. Workers import this package,
    so the driver's path goes along unless a Ray job's working_dir provides it.
    """
    import socket

    import ray

    from . import ray_console

    global _STARTED_HERE
    if ray.is_initialized():
        return
    ray_console.install_logging_only()  # before ray.init, which logs the token notice
    ray_console.start_driver_stderr_filter()  # entry points only (cli.setup_logging opts in)
    address = address or (cfg.ray.address if cfg else None) or os.environ.get("RAY_ADDRESS")
    repo = str(Path(__file__).resolve().parents[1])  # the checkout holding ssd_ray/
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    if address:
        ray.init(address=address, log_to_driver=True,
                 runtime_env=None if os.environ.get("RAY_JOB_ID") else {"env_vars": env})
        ray_console.install()
        return
    dashboard_kwargs = {"include_dashboard": False}
    if local_dashboard(cfg):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        dashboard_kwargs = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port}
    for key, value in LOCAL_RAY_ENV.items():
        if key not in os.environ:
            _ENV_SET_HERE.append(key)
            os.environ[key] = value
    # Pooled workers stay until shutdown instead of leaving after 1 s idle: a graceful idle exit is
    # where Ray's exit crash happens (module docstring); at shutdown they are killed outright.
    system_config = {"idle_worker_killing_time_threshold_ms": IDLE_WORKER_KEEP_MS,
                     **local_kwargs.pop("_system_config", {})}
    ray.init(runtime_env={"env_vars": env}, log_to_driver=True, _system_config=system_config,
             **{**dashboard_kwargs, **local_kwargs})
    _STARTED_HERE = True
    ray_console.install()


def finish_ray(succeeded: bool) -> None:
    """The driver is done with Ray. After a success, crash reports of Ray's helper processes are kept
    off the console (`ray_console`); a local Ray started by `init_ray` is shut down now, which kills
    its idle workers instead of letting them exit one by one (see the module docstring). A Ray this
    process joined or was handed (a cluster, a test's Ray, a Tune trial) is left running.
    """
    global _STARTED_HERE
    from . import ray_console

    if succeeded:
        ray_console.mark_run_succeeded()
    if not _STARTED_HERE:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _STARTED_HERE = False
    for key in _ENV_SET_HERE:
        os.environ.pop(key, None)
    _ENV_SET_HERE.clear()
    ray_console.stop_driver_stderr_filter()
