"""The suite's baseline, as every scenario starts and ends: checked first (it is also what `row` restores)."""

from failures_lib import WORKERS, at_baseline, baseline_version, refresh


def test_baseline(cluster, poller):
    """baseline: 3 workers on one release, one cluster, boot servers level, allow-lists exactly the workers"""
    assert at_baseline(cluster) == ""
    refresh(cluster)
    nodes = {"worker@%s" % ip for ip in cluster.workers.values()}
    vsn = baseline_version(cluster)
    for ip in cluster.workers.values():
        status = cluster.status(ip, 2.0)
        assert status["version"] == vsn and set(status["nodes"]) >= nodes - {status["node"]}, status
    assert len(nodes) == WORKERS
