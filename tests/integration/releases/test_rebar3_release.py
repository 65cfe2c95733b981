"""A rebar3 release with its own NIF, a priv data file, crypto and ssl (OTP apps bundled as relx does),
on plain Debian hosts: site v1, a self-joined worker, deploy v2, an Auto Scaling worker after the deploy,
the release's vm.args, its cookie and names dropped, node_restart refusing a node without its files."""

import json
import time

from conftest import STATUS_BOUND_SECONDS
from localcloud_cluster import REPO, contract, run

RELEASE_COOKIE = "hello_rebar3_release_cookie"  # in examples/hello_rebar3/config/vm.args


def assert_release(found, vsn):
    for ip, status in found.items():
        assert status["node"] == "worker@%s" % ip, status  # the cluster's name, not the release's -sname
        assert status["release"] == "hello_rebar3" and status["app_version"] == vsn, status
        assert status["nif"]["version"] == vsn and status["nif"]["add"] == 42, status
        assert vsn in status["priv"] and not status["priv"].startswith("error"), status
        assert status["ssl"] is True and len(status["crypto"]["sha256"]) == 64, status
        # The release's vm.args: +S 1:1, +A 8, -kernel net_setuptime 11.
        assert (status["schedulers"], status["async_threads"]) == (1, 8), status
        assert status["vm_args_kernel"]["net_setuptime"] == 11, status


def test_v1_runs_on_pushed_workers(rebar3_cluster):
    c = rebar3_cluster
    assert_release(c.wait_status(c.pushed, "1.0.0"), "1.0.0")
    # The owned flags were dropped with a warning that names them, never the value.
    output = c.site.stdout + c.site.stderr  # Ansible prints warnings on stderr
    assert "vm.args flags -setcookie, -sname" in output and RELEASE_COOKIE not in output


def test_release_cookie_is_nowhere_on_the_nodes(rebar3_cluster):
    c = rebar3_cluster
    for ip in [c.boot_ip] + c.pushed:
        cmdlines = c.ssh(ip, "sudo sh -c 'for f in /proc/[0-9]*/cmdline; do tr \"\\000\" \" \" < $f; echo; done'").stdout
        assert RELEASE_COOKIE not in cmdlines
        assert "-setcookie" not in cmdlines
        # The needle comes on stdin: on a command line, sudo would log it to the journal itself.
        files = c.ssh(ip, "sudo grep -rlF -f - /srv /etc %s %s /tmp /var/log; true" % (c.layout["home"], c.layout["helpers_dir"]),
                      stdin=RELEASE_COOKIE + "\n").stdout
        assert files.strip() == "", files
    # ps shows the release's emulator flags on the worker's VM.
    ps = c.ssh(c.pushed[0], "ps -o args= -C beam.smp").stdout
    assert "-S 1:1" in ps and "-A 8" in ps and "net_setuptime 11" in ps, ps


def test_self_joined_worker_boots_the_release(rebar3_cluster, node_image):
    c = rebar3_cluster
    c.image_id = node_image
    worker = c.launch_workers(1)[0]
    c.joined = [worker["PrivateIpAddress"]]
    assert_release(c.wait_status(c.pushed + c.joined, "1.0.0"), "1.0.0")


def test_deploy_v2_moves_pushed_and_self_joined_workers(rebar3_cluster):
    c = rebar3_cluster
    c.playbook("deploy", "-e", "deploy_release=%s" % c.releases["2.0.0"])
    ips = c.pushed + getattr(c, "joined", [])
    assert_release(c.wait_status(ips, "2.0.0", bound=30), "2.0.0")
    for ip in ips:
        listing = c.ssh(ip, "ls %(releases_dir)s; readlink %(current_link)s; "
                            "sudo md5sum %(releases_dir)s/2.0.0/lib/hello_rebar3-2.0.0/priv/hello_rebar3_nif.so" % c.layout).stdout
        assert listing.split()[:2] == ["1.0.0", "2.0.0"], listing
    # The boot server and a worker hold the same NIF.
    nif = "%s/2.0.0/lib/hello_rebar3-2.0.0/priv/hello_rebar3_nif.so" % c.layout["releases_dir"]
    sums = {ip: c.ssh(ip, "md5sum %s" % nif).stdout.split()[0] for ip in [c.boot_ip] + ips}
    assert len(set(sums.values())) == 1, sums


def test_autoscaling_worker_launched_after_the_deploy_boots_v2(rebar3_cluster, node_image):
    c = rebar3_cluster
    tags = [{"Key": contract.TAG_CLUSTER, "Value": c.name}, {"Key": contract.TAG_ROLE, "Value": contract.ROLE_WORKER},
            {"Key": contract.TAG_NODE_NAME, "Value": "worker"}, {"Key": contract.TAG_JOIN, "Value": contract.JOIN_SELF}]
    import base64

    c.aws("ec2").create_launch_template(LaunchTemplateName="%s-worker" % c.name, LaunchTemplateData={
        "ImageId": node_image, "InstanceType": "t3.small", "KeyName": "localcloud", "SecurityGroupIds": c.security_group_ids,
        "UserData": base64.b64encode(c.worker_user_data().encode()).decode(),
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}]})
    before = set(c.worker_ips())
    c.aws("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="%s-workers" % c.name, MinSize=1, MaxSize=1, DesiredCapacity=1,
        LaunchTemplate={"LaunchTemplateName": "%s-worker" % c.name, "Version": "$Latest"}, VPCZoneIdentifier=c.subnet_id)
    deadline = time.monotonic() + STATUS_BOUND_SECONDS
    while not set(c.worker_ips()) - before:
        assert time.monotonic() < deadline, "the Auto Scaling group launched no worker"
        time.sleep(1)
    new = sorted(set(c.worker_ips()) - before)
    found = c.wait_status(new, "2.0.0")
    assert_release(found, "2.0.0")


def test_node_restart_refuses_a_node_without_the_release_files(rebar3_cluster):
    c = rebar3_cluster
    ip = c.pushed[0]
    nif = "%s/2.0.0/lib/hello_rebar3-2.0.0/priv/hello_rebar3_nif.so" % c.layout["releases_dir"]
    c.ssh(ip, "sudo rm %s" % nif)
    before = c.status(ip)
    instance = [i["InstanceId"] for r in c.ec2.describe_instances(Filters=[{"Name": "private-ip-address", "Values": [ip]}])["Reservations"]
                for i in r["Instances"] if i["State"]["Name"] == "running"][0]
    proc = run([str(REPO / ".venv/bin/ansible"), instance, "-i", str(c.inventory_file), "-b", "-m", "skunkworks.erlang_ec2.node_restart",
                "-a", json.dumps({"node": "worker@%s" % ip, "cookie_file": c.layout["cookie_file"]})],
               env=c.env(), check=False)
    assert proc.returncode != 0 and "refusing to restart worker@%s" % ip in proc.stdout and nif in proc.stdout, proc.stdout[-3000:]
    after = c.status(ip)
    assert after == before, (before, after)  # untouched: same node, same release, still serving
    assert c.ssh(ip, "test -e %s" % nif, check=False).returncode != 0
    # rolling_restart copies the file back first, then restarts.
    c.playbook("rolling_restart")
    assert c.ssh(ip, "test -e %s" % nif, check=False).returncode == 0
    assert_release(c.wait_status([ip], "2.0.0", bound=30), "2.0.0")


def test_local_files_copy_cost_against_a_bare_diskless_boot(rebar3_cluster):
    """Figures only (printed, not asserted): what the copy adds to every worker start. On one worker, in one
    run: the `check` of the release's files (nothing to copy) vs a bare VM booted from the boot server that
    halts at once, median of 5 each."""
    c = rebar3_cluster
    ip = c.pushed[-1]
    script = ("t() { s=$(date +%%s%%N); \"$@\" >/dev/null 2>&1 || echo FAIL \"$@\"; echo $(( ($(date +%%s%%N) - s) / 1000000 )); }; "
              "for i in 1 2 3 4 5; do "
              "t sudo %(lf)s %(bs)s hello_rebar3 check; "
              "t sudo erl -noshell -noinput -boot start_clean -loader inet -hosts %(bs)s -eval 'halt().'; done"
              % {"bs": c.boot_ip, "lf": c.layout["local_files_script"]})
    out = c.ssh(ip, script, timeout=300).stdout.split()
    assert "FAIL" not in out, out
    check, bare = sorted(int(x) for x in out[0::2]), sorted(int(x) for x in out[1::2])
    print("local files check (files in place) median %d ms %s; bare diskless VM boot-and-halt median %d ms %s; ratio %.2f"
          % (check[2], check, bare[2], bare, check[2] / bare[2]))
