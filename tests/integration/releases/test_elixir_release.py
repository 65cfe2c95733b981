"""A mix release (Elixir 1.14, include_erts: false, consolidated protocols, crypto from the boot
server's OTP): site v1 on a pushed worker, a self-joined worker, deploy v2 on both."""


def assert_release(found, vsn):
    for ip, status in found.items():
        assert status["node"] == "worker@%s" % ip, status
        assert status["release"] == "hello_elixir", status
        assert status["consolidated"] is True, status  # the release's consolidated protocols are on the boot path
        assert status["protocol"] and status["crypto"], status
        assert status["elixir"].startswith("1.14"), status


def test_v1_on_pushed_and_self_joined_workers(elixir_cluster, node_image):
    c = elixir_cluster
    assert_release(c.wait_status(c.pushed, "1.0.0"), "1.0.0")
    c.image_id = node_image
    c.joined = [c.launch_workers(1)[0]["PrivateIpAddress"]]
    assert_release(c.wait_status(c.pushed + c.joined, "1.0.0"), "1.0.0")
    assert "releases/COOKIE" not in c.ssh(c.boot_ip, "sudo find %s" % c.layout["release_root"]).stdout


def test_deploy_v2_moves_every_worker(elixir_cluster):
    c = elixir_cluster
    c.playbook("deploy", "-e", "deploy_release=%s" % c.releases["2.0.0"])
    ips = c.pushed + getattr(c, "joined", [])
    assert_release(c.wait_status(ips, "2.0.0", bound=30), "2.0.0")
