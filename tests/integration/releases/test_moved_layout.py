"""The host layout moved (issue 16): site then deploy on a localcloud cluster whose inventory sets
erlang_home and erlang_release_root to non-default directories. The cluster works (the workers joined,
serving the deployed version), the cookie is at the moved path (mode 0400), and nothing is created at
the default roots.

One boot server and two pushed workers of the Debian+Erlang image, the hello_cluster example (v1 by
site, v2 by deploy). The moved roots are the inventory's group_vars, as a user would set them.
"""

import os
import posixpath
import secrets

import pytest

from conftest import ReleaseCluster
from localcloud_cluster import DEFAULT_LAYOUT, contract, run
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import host_layout

ROOTS = {"erlang_home": "/data/erlang-home", "erlang_release_root": "/data/erlang-releases"}
MOVED = host_layout(home=ROOTS["erlang_home"], release_root=ROOTS["erlang_release_root"])
IMAGE_NAME = "localcloud-debian-12-erlang"


def build_hello(vsn, out):
    run(["make", "-s", "-C", "examples/hello_cluster", "tar", "VSN=%s" % vsn, "OUT=%s" % out], timeout=300)
    return str(out / ("hello_cluster-%s.tar.gz" % vsn))


@pytest.fixture(scope="module")
def moved_cluster(endpoint_url, cookie, tmp_path_factory):
    """A boot server and two pushed workers, the layout moved by the inventory, site with v1."""
    workdir = tmp_path_factory.mktemp("moved")
    releases = {vsn: build_hello(vsn, workdir / "dist") for vsn in ("1.0.0", "2.0.0")}
    c = ReleaseCluster(endpoint_url, workdir, "relmv%s" % secrets.token_hex(2), cookie, layout=MOVED)
    c.releases = releases
    c.write_files()
    with open(str(workdir / "inventory" / "group_vars" / "all.yml"), "a") as handle:
        handle.write("".join("%s: %s\n" % item for item in sorted(ROOTS.items())))
    try:
        image = c.image_named(IMAGE_NAME)
        boot = c.run_instances(image, 1, contract.ROLE_BOOT_SERVER, contract.render_user_data(c.name, contract.ROLE_BOOT_SERVER, "boot"))[0]
        c.boot_id, c.boot_ip = boot["InstanceId"], boot["PrivateIpAddress"]
        c.boot_node = contract.node_id("boot", c.boot_ip)
        pushed = c.run_instances(image, 2, contract.ROLE_WORKER, c.worker_user_data())
        c.wait_state([boot["InstanceId"]] + [i["InstanceId"] for i in pushed], "running")
        c.pushed = sorted(i["PrivateIpAddress"] for i in pushed)
        c.site = c.playbook("site", "-e", "site_initial_release=%s" % releases["1.0.0"])
        yield c
    finally:
        if not os.environ.get("RELEASES_KEEP"):
            c.cleanup()


def assert_serving(c, vsn, bound=None):
    found = c.wait_status(c.pushed, vsn, **({"bound": bound} if bound else {}))
    for ip, status in found.items():
        assert status["node"] == "worker@%s" % ip and status["version"] == vsn, status
        assert set(status["nodes"]) >= {"worker@%s" % other for other in c.pushed if other != ip}, status
    return found


def test_site_and_deploy_with_a_moved_layout(moved_cluster):
    c = moved_cluster
    assert MOVED["cookie_file"] != DEFAULT_LAYOUT["cookie_file"] and MOVED["current_link"] != DEFAULT_LAYOUT["current_link"]
    assert_serving(c, "1.0.0")
    for ip in [c.boot_ip] + c.pushed:
        # The cookie at the moved path, private to the service user; the user's home moved with it.
        mode = c.ssh(ip, "sudo stat -c '%%a %%U' %s" % MOVED["cookie_file"]).stdout.split()
        assert mode == ["400", MOVED["user"]], (ip, mode)
        assert c.ssh(ip, "getent passwd %s" % MOVED["user"]).stdout.strip().split(":")[5] == MOVED["home"]
    # The units run with the moved home, the workers boot from the moved release root.
    boot_env = c.ssh(c.boot_ip, "systemctl show -p Environment --value %s" % MOVED["boot_server_unit"]).stdout
    assert "HOME=%s" % MOVED["home"] in boot_env.split(), boot_env
    for ip in c.pushed:
        worker_env = c.ssh(ip, "systemctl show -p Environment --value %s" % MOVED["worker_unit"]).stdout
        assert "HOME=%s" % MOVED["home"] in worker_env.split(), worker_env
        args = c.ssh(ip, "ps -u %s -o args" % MOVED["user"]).stdout
        assert "-boot %s/hello_cluster" % MOVED["current_link"] in args, args
    # The allow-list, running and persisted at the moved path, is the workers.
    assert c.persisted_slaves() == set(c.pushed)
    assert c.which_slaves() == set(c.pushed)
    # One file, the boot server's own (its one writer), beside no file of joined workers.
    assert c.ssh(c.boot_ip, "sudo stat -c '%%U %%a' %s" % MOVED["allow_list_file"]).stdout.split() == [MOVED["user"], "640"]
    assert c.ssh(c.boot_ip, "sudo test -e %s" % MOVED["joined_allow_list_file"], check=False).returncode == 1

    c.playbook("deploy", "-e", "deploy_release=%s" % c.releases["2.0.0"])
    assert_serving(c, "2.0.0", bound=60)
    # The boot server's releases and `current` (switched by deploy) at the moved path.
    assert c.ssh(c.boot_ip, "ls %s" % MOVED["releases_dir"]).stdout.split() == ["1.0.0", "2.0.0"]
    link = c.ssh(c.boot_ip, "readlink %s" % MOVED["current_link"]).stdout.strip()
    assert link == posixpath.join(MOVED["releases_dir"], "2.0.0"), link
    for ip in c.pushed:
        # The workers' local files of v2 (copied before the restart into it) at the moved path too.
        assert "2.0.0" in c.ssh(ip, "ls %s" % MOVED["releases_dir"]).stdout.split(), ip


def test_nothing_is_created_at_the_default_roots(moved_cluster):
    c = moved_cluster
    for ip in [c.boot_ip] + c.pushed:
        for root in (DEFAULT_LAYOUT["home"], DEFAULT_LAYOUT["release_root"]):
            found = c.ssh(ip, "sudo test -e %s" % root, check=False)
            assert found.returncode == 1, "%s exists on %s" % (root, ip)
