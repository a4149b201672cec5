"""Forward an AWS spot interruption notice to Ray: drain this node for preemption when it comes.

    python -m pipelines.spot_watcher --address $RAY_HEAD_IP:6379        # started by cluster.yaml on spot nodes

Polls the instance metadata service (IMDSv2) every --interval seconds; on a notice it drains its own
Ray node with the notice's deadline (Ray Train then takes a just-in-time checkpoint) and exits.
See ssd_ray/spot.py and docs/cluster.md ("Spot instances").
"""

from __future__ import annotations

import argparse
import logging
import sys

from ssd_ray.cli import setup_logging


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", required=True, help="GCS address of the cluster (head:6379)")
    p.add_argument("--node-id", help="hex id of the node to drain (default: the alive node at --node-ip)")
    p.add_argument("--node-ip", help="this node's IP (default: what Ray sees as this machine's address)")
    p.add_argument("--metadata-url", default="http://169.254.169.254", help="instance metadata service")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between polls (AWS gives ~120 s notice)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    from ssd_ray.spot import MetadataClient, SpotWatcher, node_id_for_ip

    node_id = args.node_id
    if not node_id:
        import ray.util

        node_id = node_id_for_ip(args.address, args.node_ip or ray.util.get_node_ip_address())
    logging.getLogger("ssd_ray.spot").info("watching spot notices for node %s (%s every %.0f s)", node_id,
                                           args.metadata_url, args.interval)
    notice = SpotWatcher(args.address, node_id, MetadataClient(args.metadata_url), args.interval).run()
    return 0 if notice else 1


if __name__ == "__main__":
    sys.exit(main())
