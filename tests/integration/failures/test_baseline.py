"""The suite's baseline, as every scenario starts and ends: checked first (it is also what `row` restores)."""

from failures_lib import BASE_VSN, WORKERS, at_baseline, refresh


def test_baseline(cluster, poller):
    """baseline: 3 workers on 1.0.0, one cluster, allow-list exactly the workers"""
    assert at_baseline(cluster) == ""
    refresh(cluster)
    nodes = {"worker@%s" % ip for ip in cluster.workers.values()}
    for ip in cluster.workers.values():
        status = cluster.status(ip, 2.0)
        assert status["version"] == BASE_VSN and set(status["nodes"]) >= nodes - {status["node"]}, status
    assert len(nodes) == WORKERS
