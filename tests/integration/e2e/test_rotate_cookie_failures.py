"""rotate_cookie when a node cannot follow (it is named, the play fails with rc != 0, a second run finishes the job),
and bad input (refused before any change).

- A node that answers neither the cookie of its file nor the new one (it runs with a third) stops the play at that
  node: the nodes after it are not touched (their cookie files still hold the old cookie).
- A worker that is not running is not a reason to stop: its file gets the new cookie (its next start uses it), and
  the final check names it as not answering. Started again, it joins on the new cookie.
Each test starts from the cookie the cluster has; a module fixture puts the session's original cookie back.
"""

import secrets
import time

import pytest

from localcloud_cluster import worker_status
from rotate_lib import LAYOUT, node_eval, rotate, ssm_cookie


@pytest.fixture(scope="module")
def workdir(cluster, tmp_path_factory):
    """A directory for the module's files; the session's original cookie is put back at the end."""
    path = str(tmp_path_factory.mktemp("rotate-failures"))
    cluster.refresh()
    original = ssm_cookie(cluster)
    yield path
    if ssm_cookie(cluster) != original:
        restored = rotate(cluster, path, original)
        assert restored.rc == 0, restored.tail()


def file_cookie(cluster, ip):
    return cluster.ssh(ip, "sudo cat %s" % LAYOUT["cookie_file"]).stdout


def test_a_node_on_another_cookie_stops_the_rotation_there_and_is_named(cluster, workdir):
    current, new, third = ssm_cookie(cluster), "n" + secrets.token_hex(16), "x" + secrets.token_hex(16)
    workers = dict((ip, "worker@%s" % ip) for ip in cluster.workers.values())
    # Every worker runs with a third cookie (its connections stay up): the first one the play reaches fails.
    for ip, node in workers.items():
        assert node_eval(cluster, ip, node, current, "erlang:set_cookie('%s')." % third) == "{ok, true}"
    try:
        result = rotate(cluster, workdir, new)
    finally:
        for ip, node in workers.items():
            assert node_eval(cluster, ip, node, third, "erlang:set_cookie('%s')." % current) == "{ok, true}"
    assert result.rc != 0, result.tail()
    failed = [node for node in workers.values() if "%s could not be moved to the new cookie" % node in result.stdout]
    assert len(failed) == 1, result.tail(60)
    assert "refused both the current cookie" in result.stdout
    assert "Every node of" not in result.stdout  # the play stopped before the final check
    # The boot servers moved; no worker's file was touched (the failed one, and the ones after it).
    for ip in cluster.boot_servers.values():
        assert file_cookie(cluster, ip) == new
    for ip in workers:
        assert file_cookie(cluster, ip) == current
    for text in (result.stdout, result.stderr):
        assert new not in text and current not in text and third not in text

    # Run again with the same cookie: the boot servers are left as they are, the workers move.
    again = rotate(cluster, workdir, new)
    assert again.rc == 0, again.tail(60)
    assert all(file_cookie(cluster, ip) == new for ip in workers)


def test_a_worker_not_running_gets_the_new_file_and_is_named_by_the_final_check(cluster, workdir):
    new = "n" + secrets.token_hex(16)
    ip = sorted(cluster.workers.values())[-1]
    node = "worker@%s" % ip
    assert cluster.ssh(ip, "sudo systemctl stop %s" % LAYOUT["worker_unit"]).returncode == 0
    try:
        result = rotate(cluster, workdir, new)
        assert result.rc != 0, result.tail()
        assert "1 node(s) do not answer to the new cookie: %s" % node in result.stdout, result.tail(40)
        assert "%s: not running, cookie file rewritten" % node in result.stdout
        assert file_cookie(cluster, ip) == new
        assert new not in result.stdout
    finally:
        assert cluster.ssh(ip, "sudo systemctl start %s" % LAYOUT["worker_unit"]).returncode == 0
    deadline = time.monotonic() + 120
    while worker_status(ip, 1.0) is None:
        assert time.monotonic() < deadline, "the worker did not serve /status again"
        time.sleep(1)
    # Started from its rewritten file, it is on the new cookie: the same rotation now finds every node on it.
    again = rotate(cluster, workdir, new)
    assert again.rc == 0 and again.changed == 0, again.tail(60)
    assert "Every node of %s answers to the new cookie." % cluster.name in again.stdout


def ssm_version(cluster):
    return cluster.boto3("ssm").get_parameter(Name=cluster.cookie_parameter)["Parameter"]["Version"]


@pytest.mark.parametrize("given, extra, message", [
    ("two words", {}, "rotate_cookie_new_cookie must be 1-255 printable ASCII characters"),
    (None, {"erlang_cookie_ssm_parameter": ""}, "a generated cookie kept nowhere would be lost"),
])
def test_bad_input_is_refused_before_any_change(cluster, workdir, given, extra, message):
    version, files = ssm_version(cluster), dict((ip, file_cookie(cluster, ip)) for ip in cluster.workers.values())
    result = rotate(cluster, workdir, given, extra=extra)
    assert result.rc != 0 and message in result.stdout, result.tail(30)
    assert "Nothing was changed." in result.stdout
    assert result.changed == 0, result.recap
    assert ssm_version(cluster) == version
    assert dict((ip, file_cookie(cluster, ip)) for ip in cluster.workers.values()) == files
    if given:
        assert given not in result.stdout
