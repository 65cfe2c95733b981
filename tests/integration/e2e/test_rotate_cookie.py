"""rotate_cookie on the session's running cluster (issue 14): every node moves to a new cookie with no restart.

While a poller reads every worker's /status, rotate_cookie moves the cluster to a generated cookie (stored in the
cluster's SSM parameter). Then: every node accepts the new cookie and refuses the old one, no node restarted (the
unit's OS pid and the node's application controller are the ones from before), the poller saw no failed request,
the cookie files hold the new cookie (0400, the service user's), `site` changes nothing and restarts nothing, and no
cookie was printed. A module fixture puts the session's original cookie back afterwards (rotate_cookie again, with
the cookie given from a 0600 vars file), so the other files of the session find the cluster as they expect.
"""

import pytest

from localcloud_cluster import StatusPoller
from rotate_lib import LAYOUT, check_cookies, identities, nodes_of, rotate, ssm_cookie


@pytest.fixture(scope="module")
def rotated(cluster, tmp_path_factory):
    """rotate_cookie (a generated cookie) run once on the session's cluster while a poller reads every worker; what
    the tests look at. The original cookie is put back at the end (rotate_cookie with it given)."""
    workdir = str(tmp_path_factory.mktemp("rotate"))
    cluster.refresh()
    original = ssm_cookie(cluster)
    try:
        before = identities(cluster)
        poller = StatusPoller(cluster.workers.values(), interval=0.05)
        poller.start()
        try:
            result = rotate(cluster, workdir)
        finally:
            poller.stop()
        yield {"workdir": workdir, "old": original, "new": ssm_cookie(cluster), "before": before, "poller": poller,
               "result": result}
    finally:
        if ssm_cookie(cluster) != original:
            restored = rotate(cluster, workdir, original)
            assert restored.rc == 0, restored.tail()
            assert ssm_cookie(cluster) == original


def test_every_node_moves_to_the_new_cookie_with_no_restart_and_no_failed_request(cluster, rotated):
    result, old_cookie, new_cookie = rotated["result"], rotated["old"], rotated["new"]
    assert result.rc == 0, result.tail(80)
    assert new_cookie != old_cookie
    # No restart, and no request lost while the nodes changed cookie.
    before, poller = rotated["before"], rotated["poller"]
    assert all(pid and ac.startswith("{ok,") for pid, ac in before.values()), before
    assert poller.polls > 0 and poller.failed == [], (poller.polls, poller.failed[:10])
    print("rotate_cookie: %.1f s; poller: %d requests to %d workers, %d failed" % (result.elapsed, poller.polls, len(poller.ips), len(poller.failed)))
    assert identities(cluster) == before

    # Every node accepts a new connection made with the new cookie and refuses the old one.
    checked = check_cookies(cluster, rotated["workdir"], new_cookie, old_cookie)
    assert checked.rc == 0, checked.tail(60)
    assert len(checked.recap) == len(nodes_of(cluster)), checked.recap

    # The cookie files hold the new cookie, 0400, owned by the service user (what restarts read).
    for ip in nodes_of(cluster):
        stat = cluster.ssh(ip, "sudo stat -c '%%U %%G %%a' %s" % LAYOUT["cookie_file"]).stdout.split()
        assert stat == [LAYOUT["user"], LAYOUT["group"], "400"], (ip, stat)
        assert cluster.ssh(ip, "sudo cat %s" % LAYOUT["cookie_file"]).stdout == new_cookie, ip

    # Neither cookie was printed.
    for text in (result.stdout, result.stderr, checked.stdout, checked.stderr):
        assert new_cookie not in text and old_cookie not in text


def test_the_same_cookie_again_changes_nothing(cluster, rotated):
    again = rotate(cluster, rotated["workdir"], rotated["new"])
    assert again.rc == 0 and again.changed == 0, again.recap
    assert rotated["new"] not in again.stdout


def test_site_after_the_rotation_changes_and_restarts_nothing(cluster, rotated):
    before = identities(cluster)
    result = cluster.playbook("site")
    assert result.changed == 0, result.recap
    assert identities(cluster) == before
    assert rotated["new"] not in result.stdout
