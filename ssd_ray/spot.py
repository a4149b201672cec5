"""Spot interruption notices -> Ray node drains, so Ray Train sees a reclaim coming.

AWS gives a spot instance about two minutes' notice before reclaiming it, through the instance
metadata service (IMDSv2): `GET /latest/meta-data/spot/instance-action` answers 404 until then, and
afterwards `{"action": "terminate" | "stop" | "hibernate", "time": "2026-12-01T08:22:00Z"}`. Nothing in
Ray forwards that to the cluster, so `SpotWatcher` runs on every spot node (`cluster.yaml` starts it,
`python -m pipelines.spot_watcher`), polls the notice and, when it comes, asks GCS to drain its own
node for preemption (`DRAIN_NODE_REASON_PREEMPTION`, deadline = the notice's time). Ray Train's
preemption watcher then tells every worker (`ray.train.get_preemption_info()`), the loop takes a
just-in-time checkpoint, and the run resumes from it when the node is gone.

KubeRay needs none of this: Ray drains a pod's node on the pod's SIGTERM (docs/cluster.md).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger("ssd_ray.spot")

IMDS_URL = "http://169.254.169.254"
TOKEN_TTL_S = 21600  # six hours, IMDSv2's maximum
TOKEN_PATH = "/latest/api/token"
NOTICE_PATH = "/latest/meta-data/spot/instance-action"


@dataclass(frozen=True)
class SpotNotice:
    action: str  # "terminate", "stop" or "hibernate"
    time: dt.datetime  # when AWS reclaims the instance (UTC)

    def seconds_left(self, now: dt.datetime | None = None) -> int:
        now = now or dt.datetime.now(dt.timezone.utc)
        return max(0, int((self.time - now).total_seconds()))


def parse_notice(body: str) -> SpotNotice:
    """The instance-action document -> `SpotNotice`; ValueError naming what is wrong otherwise."""
    try:
        doc = json.loads(body)
        when = dt.datetime.strptime(doc["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        return SpotNotice(str(doc["action"]), when)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"unexpected spot instance-action document {body[:200]!r}: {e}") from None


class MetadataClient:
    """IMDSv2: a session token (PUT), then token-authenticated GETs; the token is renewed when refused."""

    def __init__(self, base_url: str = IMDS_URL, timeout_s: float = 2.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._token: str | None = None

    def _token_value(self) -> str:
        if self._token is None:
            req = urllib.request.Request(self.base_url + TOKEN_PATH, method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)})
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                self._token = r.read().decode()
        return self._token

    def spot_notice(self) -> SpotNotice | None:
        """The pending interruption notice, or None (404: no notice)."""
        for attempt in range(2):
            req = urllib.request.Request(self.base_url + NOTICE_PATH,
                                         headers={"X-aws-ec2-metadata-token": self._token_value()})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    return parse_notice(r.read().decode())
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
                if e.code == 401 and attempt == 0:  # expired token: fetch a new one once
                    self._token = None
                    continue
                raise
        return None


def drain_for_preemption(gcs_address: str, node_id: str, deadline_s: int, message: str) -> None:
    """Ask GCS to drain `node_id` (hex) for preemption with `deadline_s` seconds left (what
    `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION` does). RuntimeError if GCS refuses."""
    import ray
    from ray.core.generated import autoscaler_pb2

    gcs = ray._raylet.GcsClient(address=gcs_address)
    deadline_ms = int(time.time() * 1000) + deadline_s * 1000
    accepted, why = gcs.drain_node(node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
                                   message, deadline_ms)
    if not accepted:
        raise RuntimeError(f"GCS at {gcs_address} refused to drain node {node_id}: {why}")


def node_id_for_ip(gcs_address: str, ip: str) -> str:
    """Hex id of the alive Ray node whose raylet listens on `ip` (this machine's node)."""
    import ray
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    gcs = ray._raylet.GcsClient(address=gcs_address)
    ids = [nid.hex() for nid, info in gcs.get_all_node_info().items()
           if info.state == GcsNodeInfo.ALIVE and info.node_manager_address == ip]
    if len(ids) != 1:
        raise RuntimeError(f"expected one alive Ray node at {ip} in the cluster at {gcs_address}, found {len(ids)}: "
                           f"pass --node-id")
    return ids[0]


class SpotWatcher:
    """Polls the metadata service every `interval_s`; on a notice drains the node and returns it."""

    def __init__(self, gcs_address: str, node_id: str, metadata: MetadataClient | None = None,
                 interval_s: float = 5.0, drain=drain_for_preemption):
        """drain: `(gcs_address, node_id, deadline_s, message)` -> None; `drain_for_preemption` by default."""
        self.gcs_address, self.node_id = gcs_address, node_id
        self.metadata = metadata or MetadataClient()
        self.interval_s = interval_s
        self.drain = drain

    def poll_once(self) -> SpotNotice | None:
        """One look at the metadata service; drains the node when a notice is pending."""
        notice = self.metadata.spot_notice()
        if notice is None:
            return None
        left = notice.seconds_left()
        log.warning("spot %s notice for node %s: reclaimed at %s (%d s left); draining it for preemption",
                    notice.action, self.node_id, notice.time.isoformat(), left)
        self.drain(self.gcs_address, self.node_id, left, f"spot instance {notice.action} at {notice.time.isoformat()}")
        return notice

    def run(self, max_polls: int | None = None) -> SpotNotice | None:
        """Poll until a notice drained the node (returned) or `max_polls` passed (None). Metadata
        errors are logged and retried: a watcher that dies would leave the node unwatched."""
        polls = 0
        while max_polls is None or polls < max_polls:
            try:
                notice = self.poll_once()
            except (OSError, ValueError) as e:  # urllib errors are OSErrors
                log.warning("spot watcher: metadata service error (retrying): %s", e)
                notice = None
            if notice is not None:
                return notice
            polls += 1
            if max_polls is None or polls < max_polls:
                time.sleep(self.interval_s)
        return None
