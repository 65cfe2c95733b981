"""Self-joined workers on TLS, end to end on localcloud (issue 14, docs/tls.md "Self-joined workers", design B).

One cluster for the module: an IAM role and instance profile made in localcloud's IAM here (moto; fake
credentials), a boot server launched with that profile and configured by `site` with erlang_distribution=tls and
the issuer (boot_server_tls_issuer), a node image baked by `bake_image` with tls, then two workers launched by
the EC2 API only (RunInstances with the contract's user data and the profile, as Auto Scaling does; no playbook
against them): one of the cluster, and one whose erlang-cluster tag names another cluster. Everything on the
hosts is the real thing: the role credentials come from localcloud's IMDS (session = instance id), the script
reaches SSM and EC2 at localcloud's API for hosts (LOCALCLOUD_HOST_ENDPOINT_URL), and SSM records the writer,
so the issuer's writer check is on. The cluster is terminated, the image and the IAM objects deleted at the end
(SELF_JOIN_TLS_KEEP=1 keeps them).
"""

import json
import os
import re
import secrets
import shlex
import time

import boto3
import pytest

import playbook_runner

from localcloud_cluster import DEFAULT_LAYOUT as LAYOUT, Cluster, config, run

TLS_DIR = "/etc/erlang-ec2/tls"  # the erlang role's default erlang_tls_dir
PREFIX = "/erlang-ec2"  # erlang_tls_join_ssm_prefix's default
HOST_ENDPOINT_URL = "http://%s:5050" % config.IMDS_ADDRESS  # localcloud's API as its hosts reach it
JOIN_UNIT = "erlang-ec2-tls-join"
BOUND = 300  # only there so that a broken host fails the test instead of hanging it
DEADLINE = 120  # the image's erlang_tls_join_deadline: how long a worker waits for its certificate

# The trust policy's principal: moto does not evaluate it, and tests name no AWS host (on AWS it is EC2's
# service principal, docs/tls.md "IAM").
ASSUME_EC2 = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.localcloud.invalid"},
                                                      "Action": "sts:AssumeRole"}]}


def timing(name, seconds):
    print("%s: %.1f s" % (name, seconds))


class TlsCluster(Cluster):
    """The self-join suite's cluster, its instances launched with an instance profile."""

    profile = None

    def run_instances(self, image_id, count, role, user_data, node_name=None, cluster_tag=None):
        from plugins.module_utils import cluster as contract
        tags = {contract.TAG_CLUSTER: cluster_tag or self.name, contract.TAG_ROLE: role,
                contract.TAG_NODE_NAME: node_name or contract.default_node_name(role), "Name": "%s-%s" % (self.name, role)}
        reply = self.ec2.run_instances(
            ImageId=image_id, MinCount=count, MaxCount=count, InstanceType="t3.small", KeyName="localcloud",
            SubnetId=self.subnet_id, SecurityGroupIds=self.security_group_ids, UserData=user_data,
            IamInstanceProfile={"Name": self.profile}, MetadataOptions={"HttpTokens": "required"},
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
        instances = reply["Instances"]
        self.launched += [i["InstanceId"] for i in instances]
        return instances


def aws_client(service):
    return boto3.client(service, endpoint_url=config.endpoint_url(), region_name=config.DEFAULT_REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def make_profile(name):
    """A role for the nodes (both statements of docs/tls.md: moto does not enforce them) and its instance profile."""
    iam = aws_client("iam")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(ASSUME_EC2))
    iam.put_role_policy(RoleName=name, PolicyName="tls-self-join", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["ssm:PutParameter", "ssm:GetParameter", "ssm:DeleteParameter", "ssm:DescribeParameters",
                                           "ec2:DescribeInstances"], "Resource": "*"}]}))
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return name


def delete_profile(name):
    iam = aws_client("iam")
    for call in (lambda: iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name),
                 lambda: iam.delete_instance_profile(InstanceProfileName=name),
                 lambda: iam.delete_role_policy(RoleName=name, PolicyName="tls-self-join"),
                 lambda: iam.delete_role(RoleName=name)):
        try:
            call()
        except Exception as exc:  # cleanup goes on: report, do not hide the test's own failure
            print("IAM cleanup of %s: %s" % (name, exc))


def tls_vars(c):
    return json.dumps({"erlang_distribution": "tls", "erlang_tls_ca_dir": str(c.workdir / "ca"),
                       "boot_server_tls_issuer": True, "erlang_tls_join_endpoint_url": HOST_ENDPOINT_URL,
                       "erlang_tls_join_deadline": DEADLINE})


def unit_state(c, ip, unit):
    """The unit's ActiveState (active, activating, failed, inactive, ...)."""
    proc = c.ssh(ip, "systemctl show -p ActiveState --value %s" % unit, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "unreachable"


def journal(c, ip, unit):
    return c.ssh(ip, "sudo journalctl -b -u %s --no-pager -o cat" % unit, check=False).stdout


def wait_for(what, check, bound=BOUND, interval=2):
    deadline = time.monotonic() + bound
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("no %s within %d s" % (what, bound))
        time.sleep(interval)


def node_eval(c, ip, expression):
    """The node command's eval (a hidden TLS node with the host's own optfile) on the host at ip, as root."""
    proc = c.ssh(ip, "sudo %s eval %s" % (LAYOUT["node_command"], shlex.quote(expression)), check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return re.sub(r"\s+", "", proc.stdout)


@pytest.fixture(scope="module")
def cluster(endpoint_url, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("self_join_tls")
    name = os.environ.get("SELF_JOIN_TLS_CLUSTER") or "tj" + secrets.token_hex(3)
    c = TlsCluster(endpoint_url, workdir, name, secrets.token_hex(20))
    c.write_files()
    c.ssm = aws_client("ssm")
    try:
        c.profile = make_profile("%s-node" % name)
        out = workdir / "dist"
        run(["make", "-s", "--no-print-directory", "-C", "examples/hello_cluster", "tar", "VSN=1.0.0", "OUT=%s" % out, "TLS=1"])
        started = time.monotonic()
        c.wait_state([c.launch_boot_server(c.erlang_ami())["InstanceId"]], "running")
        c.ansible_playbook("skunkworks.erlang_ec2.site", "-e", "cluster_name=%s" % c.name,
                           "-e", "site_initial_release=%s" % (out / "hello_cluster-1.0.0.tar.gz"), "-e", tls_vars(c))
        timing("boot server + site (tls, issuer)", time.monotonic() - started)
        started = time.monotonic()
        proc = c.ansible_playbook(
            "skunkworks.erlang_ec2.bake_image", "-e", "cluster_name=%s" % c.name, "-e", "bake_image_source_image_id=%s" % c.erlang_ami(),
            "-e", "bake_image_key_name=localcloud", "-e", "bake_image_ssh_private_key_file=%s" % c.ssh_key,
            "-e", "bake_image_subnet_id=%s" % c.subnet_id, "-e", "bake_image_no_reboot=true", "-e", c.bake_image_vars(),
            "-e", tls_vars(c), inventory=False)
        c.bake_seconds = time.monotonic() - started
        timing("bake_image (tls)", c.bake_seconds)
        c.bake_output = proc.stdout
        match = re.search(r"AMI (ami-[0-9a-f]+)", proc.stdout)
        assert match, proc.stdout[-3000:]
        c.image_id = match.group(1)
        # One worker of the cluster and one tagged for another cluster (its user data still names this one, so its
        # CSR lands where this cluster's issuer looks), launched together: RunInstances only, as Auto Scaling does.
        c.t0 = time.monotonic()
        good = c.run_instances(c.image_id, 1, "worker", c.worker_user_data())[0]
        other = c.run_instances(c.image_id, 1, "worker", c.worker_user_data(), cluster_tag=name + "-other")[0]
        c.good = (good["InstanceId"], good["PrivateIpAddress"])
        c.other = (other["InstanceId"], other["PrivateIpAddress"])
        yield c
    finally:
        if not os.environ.get("SELF_JOIN_TLS_KEEP"):
            # Also a builder a failed bake left running (bake_image names it after the cluster).
            builders = c.ec2.describe_instances(Filters=[{"Name": "tag:erlang-ec2-builder", "Values": ["erlang-ec2-node-%s-*" % name]},
                                                         {"Name": "instance-state-name", "Values": ["pending", "running"]}])
            c.terminate(c.launched + [i["InstanceId"] for r in builders["Reservations"] for i in r["Instances"]])
            if c.image_id:
                c.ec2.deregister_image(ImageId=c.image_id)
            if c.profile:
                delete_profile(c.profile)
            params = c.ssm.describe_parameters(ParameterFilters=[{"Key": "Path", "Option": "Recursive",
                                                                  "Values": ["%s/%s" % (PREFIX, name)]}])["Parameters"]
            for param in params:
                c.ssm.delete_parameter(Name=param["Name"])


def test_the_boot_server_runs_the_issuer_with_its_own_intermediate(cluster):
    c = cluster
    assert unit_state(c, c.boot_ip, "erlang-ec2-tls-issuer.timer") == "active", journal(c, c.boot_ip, "erlang-ec2-tls-issuer")
    out = c.ssh(c.boot_ip, "sudo stat -c '%%U %%a' %s/issuer.key && sudo openssl x509 -noout -text -in %s/issuer.pem" % (TLS_DIR, TLS_DIR)).stdout
    assert out.startswith("erlang 400\n"), out
    assert "CA:TRUE, pathlen:0" in out, out


def test_a_self_joined_worker_gets_its_certificate_and_joins_over_tls(cluster):
    c = cluster
    iid, ip = c.good
    node = "worker@%s" % ip

    def connected():
        if unit_state(c, ip, JOIN_UNIT) == "failed":
            raise AssertionError("the worker's %s failed: %s" % (JOIN_UNIT, journal(c, ip, JOIN_UNIT)[-3000:]))
        proc = c.ssh(c.boot_ip, "sudo %s eval %s" % (LAYOUT["node_command"], shlex.quote(
            "{ok, I} = net_kernel:nodes_info(), proplists:get_value(address, proplists:get_value('%s', I, []))." % node)),
            check=False, timeout=60)
        return proc.returncode == 0 and "tls" in proc.stdout and proc.stdout

    address = wait_for("TLS connection from %s to the boot server" % node, connected)
    timing("worker launch -> joined over TLS", time.monotonic() - c.t0)
    assert re.search(r",tls,", re.sub(r"\s+", "", address)), address
    log = journal(c, ip, JOIN_UNIT)
    assert "asked for a certificate for worker@%s in %s/%s/tls/csr/%s" % (ip, PREFIX, c.name, iid) in log, log
    assert "certificate for worker@%s installed" % ip in log, log
    # The worker itself runs TLS distribution and its connections are TLS.
    out = node_eval(c, ip, '{ok, [[P]]} = init:get_argument(proto_dist), {ok, I} = net_kernel:nodes_info(), '
                           '{P, lists:usort([element(4, proplists:get_value(address, A)) || {N, A} <- I, lists:member(N, nodes())])}.')
    assert out == '{"inet_tls",[tls]}', out
    # node_info (the collection's module, on the boot server's host, TLS with that host's certificate) sees it.
    proc = playbook_runner.run_adhoc(c.boot_id, "skunkworks.erlang_ec2.node_info", json.dumps({
        "node": node, "cookie_file": LAYOUT["cookie_file"], "distribution": "tls",
        "ssl_dist_optfile": "%s/ssl_dist.conf" % TLS_DIR, "timeout": 20}), "-b", "-o",
        inventory=c.inventory_file, env=c.env(), check=True)
    info = json.loads(proc.stdout.split("=>", 1)[1])
    assert info["reachable"] and info["release_version"] == "1.0.0", info
    assert "boot@%s" % c.boot_ip in info["connected_nodes"], info
    # Its key: 0400 erlang, never left the host; node.pem = leaf (for its address) + the boot server's intermediate.
    out = c.ssh(ip, "sudo stat -c '%%U %%a' %s/node.key; sudo cat %s/node.pem" % (TLS_DIR, TLS_DIR)).stdout
    assert out.startswith("erlang 400\n"), out
    certs = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out, re.S)
    assert len(certs) == 2, out
    leaf = c.ssh(ip, "openssl x509 -noout -subject -issuer -ext subjectAltName -nameopt RFC2253", stdin=certs[0] + "\n").stdout
    assert "subject=CN=worker@%s" % ip in leaf and "IP Address:%s" % ip in leaf, leaf
    assert "issuer=CN=erlang-ec2 issuer %s %s" % (c.name, c.boot_ip) in leaf, leaf
    verify = c.ssh(ip, "sudo openssl verify -CAfile %s/ca.pem -untrusted /dev/stdin %s/node.pem" % (TLS_DIR, TLS_DIR),
                   stdin=certs[1] + "\n", check=False)
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr
    # SSM: the CSR consumed, the certificate there, no key in any parameter; the writer check was on.
    names = [p["Name"] for p in c.ssm.describe_parameters(ParameterFilters=[{"Key": "Path", "Option": "Recursive",
                                                                             "Values": ["%s/%s" % (PREFIX, c.name)]}])["Parameters"]]
    assert "%s/%s/tls/cert/%s" % (PREFIX, c.name, iid) in names, names
    assert "%s/%s/tls/csr/%s" % (PREFIX, c.name, iid) not in names, names
    for n in names:
        assert "PRIVATE KEY" not in c.ssm.get_parameter(Name=n)["Parameter"]["Value"], n
    issuer_log = journal(c, c.boot_ip, "erlang-ec2-tls-issuer")
    assert "issued a certificate to %s (worker@%s)" % (iid, ip) in issuer_log, issuer_log[-3000:]
    assert "--no-check-writer" not in c.ssh(c.boot_ip, "systemctl cat erlang-ec2-tls-issuer.service").stdout


def test_a_worker_tagged_for_another_cluster_is_refused_with_the_issuers_reason(cluster):
    c = cluster
    iid, ip = c.other

    def failed():
        return unit_state(c, ip, JOIN_UNIT) == "failed"

    wait_for("failure of %s on the other cluster's worker" % JOIN_UNIT, failed)
    log = journal(c, ip, JOIN_UNIT)
    reason = "instance %s has tag erlang-cluster='%s-other', not '%s'" % (iid, c.name, c.name)
    assert "FAILED: the issuer refused this instance's certificate: %s" % reason in log, log[-3000:]
    refused = c.ssm.get_parameter(Name="%s/%s/tls/refused/%s" % (PREFIX, c.name, iid))["Parameter"]["Value"]
    assert refused.endswith(reason), refused
    # No certificate, no worker: the bootstrap never started. No key either: the refused request's key is gone
    # and the image brought none (the builder's would be every worker's).
    for name in ("node.pem", "node.key", "node.key.new"):
        assert c.ssh(ip, "sudo test -e %s/%s" % (TLS_DIR, name), check=False).returncode != 0, name
    assert unit_state(c, ip, LAYOUT["bootstrap_unit"]) == "inactive", journal(c, ip, LAYOUT["bootstrap_unit"])


def served_serial(c, ip):
    """The serial of the certificate the worker's distribution listener serves to a new connection (its own pair
    as the client's, so the handshake is complete)."""
    port = re.search(r"name worker at port (\d+)", c.ssh(ip, "epmd -names", check=False).stdout)
    if not port:
        return ""  # no worker node (yet)
    proc = c.ssh(ip, "echo | sudo openssl s_client -connect %s:%s -cert %s/node.pem -key %s/node.key 2>/dev/null"
                     " | openssl x509 -noout -serial" % (ip, port.group(1), TLS_DIR, TLS_DIR), check=False)
    return proc.stdout.strip()


def file_serial(c, ip):
    return c.ssh(ip, "sudo openssl x509 -noout -serial -in %s/node.pem" % TLS_DIR).stdout.strip()


def test_renewal_on_the_running_worker(cluster):
    """The image's renewal unit asks nothing while the certificate has more than 2 days; the same command with a
    longer --renew-before gets a new key and certificate in place, and the running node serves them to new
    connections (OTP's PEM cache) while it stays in the cluster."""
    c = cluster
    iid, ip = c.good
    wait_for("the certificate of %s" % ip, lambda: unit_state(c, ip, JOIN_UNIT) == "active" and served_serial(c, ip).startswith("serial="))
    assert c.ssh(ip, "systemctl is-enabled erlang-ec2-tls-renew.timer").stdout.strip() == "enabled"
    c.ssh(ip, "sudo systemctl start erlang-ec2-tls-renew.service", timeout=120)
    assert "beyond 172800 s: nothing to ask" in journal(c, ip, "erlang-ec2-tls-renew")
    before, key_before = file_serial(c, ip), c.ssh(ip, "sudo openssl pkey -pubout -in %s/node.key" % TLS_DIR).stdout
    assert served_serial(c, ip) == before
    # The renewal unit's own command line, asking 14 days before the end (the certificate lives 7): a renewal now.
    exec_start = c.ssh(ip, "systemctl show -p ExecStart --value erlang-ec2-tls-renew.service").stdout
    argv = re.search(r"argv\[\]=(.*?) ;", exec_start).group(1).replace("--renew-before 172800", "--renew-before 1209600")
    proc = c.ssh(ip, "sudo %s" % argv, check=False, timeout=180)
    assert proc.returncode == 0 and "certificate for worker@%s installed" % ip in proc.stderr, proc.stderr
    after = file_serial(c, ip)
    assert after != before
    assert c.ssh(ip, "sudo openssl pkey -pubout -in %s/node.key" % TLS_DIR).stdout != key_before
    started = time.monotonic()
    wait_for("the new certificate served by %s" % ip, lambda: served_serial(c, ip) == after, bound=200, interval=5)
    timing("renewed pair served to new connections after", time.monotonic() - started)
    out = node_eval(c, ip, "lists:member('boot@%s', nodes())." % c.boot_ip)
    assert out == "true", out
