"""Ray start-up shared by training, evaluation, prediction and tuning (below all of them).

`init_ray` joins a cluster (`ray.address`, `--address` or RAY_ADDRESS) or starts a local Ray whose
dashboard binds to 127.0.0.1. Evaluation and tuning import it from here, so no layer needs to reach
into `ssd_ray.train` for it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["init_ray"]


def init_ray(address: str | None = None, cfg=None, **local_kwargs) -> None:
    """Join the cluster at `address` (or `ray.address` / RAY_ADDRESS), else start a local Ray.

    A local Ray binds its dashboard to 127.0.0.1 on a free port and hands that URL to every worker
    (RAY_API_SERVER_ADDRESS): Train V2's placement-group cleaner asks the state API whether a Train
    controller is alive, and without the address a worker finds it by scanning the machine, which
    fails when another Ray runs there ("Found multiple active Ray instances"); the cleaner then dies
    and a stopped run keeps its CPUs. Workers import this package, so the driver's path goes along
    unless a Ray job's working_dir provides it.
    """
    import socket

    import ray

    if ray.is_initialized():
        return
    address = address or (cfg.ray.address if cfg else None) or os.environ.get("RAY_ADDRESS")
    repo = str(Path(__file__).resolve().parents[1])  # the checkout holding ssd_ray/
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    if address:
        ray.init(address=address, log_to_driver=True,
                 runtime_env=None if os.environ.get("RAY_JOB_ID") else {"env_vars": env})
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
             runtime_env={"env_vars": env}, log_to_driver=True, **local_kwargs)
