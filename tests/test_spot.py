"""The spot watcher (ssd_ray/spot.py) against a fake instance metadata service on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ssd_ray.spot import MetadataClient, SpotWatcher, parse_notice


class FakeIMDS:
    """IMDSv2 on a free port: PUT /latest/api/token, then GET instance-action with the token header.
    `notice` None -> 404; a dict -> 200 with it as JSON. Records the requests it saw."""

    def __init__(self):
        self.notice: dict | None = None
        self.requests: list[tuple[str, str, str | None]] = []
        self.token = "tok-1"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def do_PUT(self):
                fake.requests.append(("PUT", self.path, self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")))
                if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self.send_error(400)
                    return
                body = fake.token.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                token = self.headers.get("X-aws-ec2-metadata-token")
                fake.requests.append(("GET", self.path, token))
                if token != fake.token:
                    self.send_error(401)
                elif self.path != "/latest/meta-data/spot/instance-action" or fake.notice is None:
                    self.send_error(404)
                else:
                    body = json.dumps(fake.notice).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def imds():
    fake = FakeIMDS()
    yield fake
    fake.close()


def _in(seconds: int) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_parse_notice_and_deadline():
    n = parse_notice('{"action": "terminate", "time": "2026-12-01T08:22:00Z"}')
    assert n.action == "terminate" and n.time == dt.datetime(2026, 12, 1, 8, 22, tzinfo=dt.timezone.utc)
    assert n.seconds_left(dt.datetime(2026, 12, 1, 8, 20, 30, tzinfo=dt.timezone.utc)) == 90
    assert n.seconds_left(dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)) == 0  # past: no negative deadline
    with pytest.raises(ValueError, match="unexpected spot instance-action document"):
        parse_notice('{"action": "terminate"}')


def test_no_notice_no_drain_then_a_notice_drains_with_its_deadline(imds):
    drains = []
    watcher = SpotWatcher("gcs:6379", "ab" * 28, MetadataClient(imds.url), interval_s=0.01,
                          drain=lambda *a: drains.append(a))
    assert watcher.run(max_polls=3) is None and drains == []
    # IMDSv2: one token, then authenticated GETs.
    assert imds.requests[0] == ("PUT", "/latest/api/token", "21600")
    assert [r[2] for r in imds.requests[1:]] == ["tok-1"] * 3
    imds.notice = {"action": "terminate", "time": _in(90)}
    notice = watcher.run(max_polls=3)
    assert notice is not None and notice.action == "terminate"
    [(gcs, node, deadline_s, message)] = drains
    assert (gcs, node) == ("gcs:6379", "ab" * 28) and 85 <= deadline_s <= 90
    assert message.startswith("spot instance terminate at ")


def test_expired_token_is_renewed_and_server_errors_are_retried(imds):
    client = MetadataClient(imds.url)
    assert client.spot_notice() is None
    imds.token = "tok-2"  # the old token is now refused with 401: one new PUT, then the GET succeeds
    imds.notice = {"action": "stop", "time": _in(60)}
    assert client.spot_notice().action == "stop"
    assert [r[0] for r in imds.requests] == ["PUT", "GET", "GET", "PUT", "GET"]
    broken = SpotWatcher("gcs:6379", "cd" * 28, MetadataClient("http://127.0.0.1:1"), interval_s=0.01,
                         drain=lambda *a: pytest.fail("drained without a notice"))
    assert broken.run(max_polls=2) is None  # connection refused: logged and retried, never a crash


@pytest.mark.slow
def test_watcher_drains_its_node_of_a_local_cluster(imds):
    """A real local cluster: the notice drains the watched node for preemption (GCS records the reason
    and message), and the head is untouched."""
    import time

    import ray
    import ray.util
    from ray.cluster_utils import Cluster
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        from ssd_ray.spot import drain_for_preemption, node_id_for_ip

        # Simulated nodes share one IP, so finding "this machine's node" by IP is ambiguous: say so.
        with pytest.raises(RuntimeError, match="found 2: pass --node-id"):
            node_id_for_ip(cluster.address, ray.util.get_node_ip_address())
        seen = []

        def drain(*args):
            seen.append(args)
            drain_for_preemption(*args)

        watcher = SpotWatcher(cluster.address, node.node_id, MetadataClient(imds.url), interval_s=0.05, drain=drain)
        assert watcher.run(max_polls=2) is None and not seen
        imds.notice = {"action": "terminate", "time": _in(120)}
        assert watcher.run(max_polls=5) is not None
        assert len(seen) == 1 and 115 <= seen[0][2] <= 120
        gcs = ray._raylet.GcsClient(address=cluster.address)
        deadline = time.time() + 30
        while time.time() < deadline:  # an idle node finishes draining at once and leaves the cluster
            info = {nid.hex(): i for nid, i in gcs.get_all_node_info().items()}[node.node_id]
            if info.state == GcsNodeInfo.DEAD:
                break
            time.sleep(0.2)
        assert info.state == GcsNodeInfo.DEAD
        assert info.death_info.reason_message.startswith("spot instance terminate at ")
        head = [i for i in gcs.get_all_node_info().values() if i.is_head_node]
        assert head and head[0].state == GcsNodeInfo.ALIVE
    finally:
        cluster.shutdown()
