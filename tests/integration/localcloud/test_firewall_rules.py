"""localcloud's security groups, no cloud needed: the rules a host gets (a pure function of groups and instances), that the
kernel takes them and a second apply replaces them, the EC2 API's view read into the same model, the switch."""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

from localcloud import firewall  # on sys.path through conftest
from localcloud.errors import LocalcloudError
from localcloud.firewall import CHAIN, Host, Rule

REPO = pathlib.Path(__file__).resolve().parents[3]

BASE = [
    "*filter",
    ":%s - [0:0]" % CHAIN,
    "-F INPUT",
    "-A INPUT -j %s" % CHAIN,
    "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" % CHAIN,
    "-A %s -i lo -j ACCEPT" % CHAIN,
]
END = ["-A %s -j DROP" % CHAIN, "COMMIT", ""]


def rules_of(text):
    """The rules between the fixed head (stateful, loopback) and the final DROP."""
    lines = text.split("\n")
    assert lines[:len(BASE)] == BASE and lines[-len(END):] == END, text
    return lines[len(BASE):-len(END)]


def cluster():
    groups = {
        "sg-cluster": [
            Rule("tcp", 22, 22, "172.31.0.1/32", None),
            Rule("tcp", 4369, 4369, None, "sg-cluster"),
            Rule("tcp", 9100, 9105, None, "sg-cluster"),
            Rule("udp", 4368, 4368, None, "sg-workers"),
        ],
        "sg-workers": [],
        "sg-other": [Rule("-1", None, None, None, "sg-other")],
    }
    hosts = [
        Host("i-boot", "172.31.0.10", "localcloud", "running", ("sg-cluster",)),
        Host("i-w1", "172.31.0.11", "localcloud", "running", ("sg-cluster", "sg-workers")),
        Host("i-w2", "172.31.0.2", "localcloud", "pending", ("sg-workers", "sg-cluster")),
        Host("i-old", "172.31.0.12", "localcloud", "terminated", ("sg-cluster", "sg-workers")),
        Host("i-stopped", "172.31.0.13", "localcloud", "stopped", ("sg-cluster",)),
        Host("i-west", "172.31.0.14", "localcloud-eu-west-1", "running", ("sg-cluster",)),
        Host("i-out", "172.31.0.20", "localcloud", "running", ("sg-other",)),
    ]
    return hosts, groups


def test_a_member_gets_its_groups_rules_with_source_groups_as_the_members_ips():
    texts = firewall.desired(*cluster())
    assert rules_of(texts["i-boot"]) == [
        "-A %s -s 172.31.0.1/32 -p tcp --dport 22 -j ACCEPT" % CHAIN,
        # members: pending and running instances of the same network, in address order; not terminated/stopped ones
        "-A %s -s 172.31.0.2 -p tcp --dport 4369 -j ACCEPT" % CHAIN,
        "-A %s -s 172.31.0.10 -p tcp --dport 4369 -j ACCEPT" % CHAIN,
        "-A %s -s 172.31.0.11 -p tcp --dport 4369 -j ACCEPT" % CHAIN,
        "-A %s -s 172.31.0.2 -p tcp --dport 9100:9105 -j ACCEPT" % CHAIN,
        "-A %s -s 172.31.0.10 -p tcp --dport 9100:9105 -j ACCEPT" % CHAIN,
        "-A %s -s 172.31.0.11 -p tcp --dport 9100:9105 -j ACCEPT" % CHAIN,
        "-A %s -s 172.31.0.2 -p udp --dport 4368 -j ACCEPT" % CHAIN,
        "-A %s -s 172.31.0.11 -p udp --dport 4368 -j ACCEPT" % CHAIN,
    ]


def test_two_groups_with_the_same_rule_give_it_once_and_the_order_of_groups_does_not_matter():
    texts = firewall.desired(*cluster())
    assert texts["i-w1"] == texts["i-boot"]  # sg-workers has no rule of its own
    assert texts["i-w2"] == texts["i-boot"]


def test_only_hosts_that_run_get_rules_and_other_networks_are_not_members():
    texts = firewall.desired(*cluster())
    assert sorted(texts) == ["i-boot", "i-out", "i-w1", "i-w2", "i-west"]
    # The same group in another network (region): only that network's members (here: itself).
    assert "-A %s -s 172.31.0.14 -p tcp --dport 4369 -j ACCEPT" % CHAIN in rules_of(texts["i-west"])
    assert not any("172.31.0.1" + str(d) in line for d in (0, 1) for line in rules_of(texts["i-west"]))


def test_all_traffic_from_a_group_and_a_host_with_no_rule_gets_only_the_drop():
    hosts, groups = cluster()
    texts = firewall.desired(hosts, groups)
    assert rules_of(texts["i-out"]) == ["-A %s -s 172.31.0.20 -j ACCEPT" % CHAIN]
    bare = firewall.desired([Host("i-bare", "172.31.0.30", "localcloud", "running", ())], groups)
    assert rules_of(bare["i-bare"]) == []


@pytest.mark.parametrize("rule,match", [
    (Rule("tcp", 0, 65535, "0.0.0.0/0", None), "-s 0.0.0.0/0 -p tcp -j ACCEPT"),
    (Rule("6", 80, 80, "10.0.0.0/8", None), "-s 10.0.0.0/8 -p tcp --dport 80 -j ACCEPT"),
    (Rule("17", 4368, 4368, "10.0.0.0/8", None), "-s 10.0.0.0/8 -p udp --dport 4368 -j ACCEPT"),
    (Rule("icmp", -1, -1, "10.0.0.0/8", None), "-s 10.0.0.0/8 -p icmp -j ACCEPT"),
    (Rule("icmp", 8, -1, "10.0.0.0/8", None), "-s 10.0.0.0/8 -p icmp --icmp-type 8 -j ACCEPT"),
    (Rule("icmp", 3, 4, "10.0.0.0/8", None), "-s 10.0.0.0/8 -p icmp --icmp-type 3/4 -j ACCEPT"),
    (Rule("-1", None, None, "10.1.2.3/32", None), "-s 10.1.2.3/32 -j ACCEPT"),
    (Rule("50", None, None, "10.1.2.3/32", None), "-s 10.1.2.3/32 -p 50 -j ACCEPT"),
])
def test_protocols_and_ports(rule, match):
    text = firewall.desired([Host("i-a", "172.31.0.4", "localcloud", "running", ("sg",))], {"sg": [rule]})["i-a"]
    assert rules_of(text) == ["-A %s %s" % (CHAIN, match)]


def test_a_source_group_without_members_and_an_unknown_group_open_nothing():
    hosts = [Host("i-a", "172.31.0.4", "localcloud", "running", ("sg", "sg-gone"))]
    assert rules_of(firewall.desired(hosts, {"sg": [Rule("tcp", 22, 22, None, "sg-empty")]})["i-a"]) == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("iptables-restore"),
                    reason="needs root, unshare and iptables")
def test_the_kernel_takes_the_text_and_a_second_apply_replaces_the_first():
    hosts, groups = cluster()
    first = firewall.desired(hosts, groups)["i-boot"]
    second = firewall.desired(hosts[:1], groups)["i-boot"]  # the others gone: fewer members
    script = textwrap.dedent("""\
        set -e
        printf '%s' "$1" | iptables-restore -w 5 --noflush
        printf '%s' "$2" | iptables-restore -w 5 --noflush
        printf '%s' "$3" | ip6tables-restore -w 5 --noflush
        ip6tables -w -S {chain}
        echo ---
        iptables -w -S INPUT
        iptables -w -S {chain}
    """).format(chain=CHAIN)
    proc = subprocess.run(["unshare", "--net", "sh", "-c", script, "sh", first, second, firewall.IPV6_TEXT],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    ipv6, ipv4 = proc.stdout.split("---\n")
    assert ipv6.splitlines() == ["-N %s" % CHAIN, "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" % CHAIN,
                                 "-A %s -i lo -j ACCEPT" % CHAIN, "-A %s -j DROP" % CHAIN]
    lines = ipv4.splitlines()
    assert lines[:2] == ["-P INPUT ACCEPT", "-A INPUT -j %s" % CHAIN]  # one jump, not two
    assert lines[-1] == "-A %s -j DROP" % CHAIN
    assert [line for line in lines if "--dport 4369" in line] == ["-A %s -s 172.31.0.10/32 -p tcp -m tcp --dport 4369 -j ACCEPT" % CHAIN]


def test_the_switch(monkeypatch):
    monkeypatch.delenv("LOCALCLOUD_SECURITY_GROUPS", raising=False)
    assert firewall.mode() == "enforce"
    monkeypatch.setenv("LOCALCLOUD_SECURITY_GROUPS", "Off")
    assert firewall.mode() == "off"
    monkeypatch.setenv("LOCALCLOUD_SECURITY_GROUPS", "permissive")
    with pytest.raises(LocalcloudError, match="LOCALCLOUD_SECURITY_GROUPS=permissive: expected one of enforce, off"):
        firewall.mode()


def test_the_api_view_and_the_daemon_view_agree_and_the_default_group_admits_its_members():
    """In a process of its own: localcloud's moto patches (the default group's rule) stay out of this one."""
    script = textwrap.dedent("""\
        import boto3
        from moto import mock_aws
        from localcloud import config, ec2, firewall

        class Reconciler:
            def wake(self):
                pass

        ec2.install(Reconciler())
        with mock_aws():
            client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
            sg = client.create_security_group(GroupName="c", Description="c")["GroupId"]
            client.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 4369, "ToPort": 4369, "UserIdGroupPairs": [{"GroupId": sg}]},
                {"IpProtocol": "udp", "FromPort": 4368, "ToPort": 4368, "IpRanges": [{"CidrIp": "172.31.0.1/32"}]}])
            members = client.run_instances(ImageId=config.BASE_AMI_ID, MinCount=2, MaxCount=2, SecurityGroupIds=[sg])["Instances"]
            plain = client.run_instances(ImageId=config.BASE_AMI_ID, MinCount=1, MaxCount=1)["Instances"][0]
            daemon = firewall.desired(*firewall.from_moto())
            assert daemon == firewall.desired(*firewall.from_api(client, config.NETWORK_NAME)), "views differ"
            default = [g for g in client.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "default"][0]
            described = client.describe_instances(InstanceIds=[plain["InstanceId"]])["Reservations"][0]["Instances"][0]
            assert [g["GroupId"] for g in described["SecurityGroups"]] == [default["GroupId"]], described["SecurityGroups"]
            assert "-A LOCALCLOUD-SG -s %s -j ACCEPT" % plain["PrivateIpAddress"] in daemon[plain["InstanceId"]]
            assert default["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == default["GroupId"]
            # ModifyInstanceAttribute: the plain instance joins the group, and is a source of its rule.
            client.modify_instance_attribute(InstanceId=plain["InstanceId"], Groups=[sg])
            daemon = firewall.desired(*firewall.from_moto())
            assert "-A LOCALCLOUD-SG -s %s -p tcp --dport 4369 -j ACCEPT" % plain["PrivateIpAddress"] in daemon[members[0]["InstanceId"]]
            assert daemon[plain["InstanceId"]] == daemon[members[0]["InstanceId"]]
            # A revoked default rule stays revoked (EC2 gives it once, at creation).
            client.revoke_security_group_ingress(GroupId=default["GroupId"], IpPermissions=default["IpPermissions"])
            ec2.add_default_group_rules()
            assert client.describe_security_groups(GroupIds=[default["GroupId"]])["SecurityGroups"][0]["IpPermissions"] == []
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    env.pop("AWS_ENDPOINT_URL", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO), check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
