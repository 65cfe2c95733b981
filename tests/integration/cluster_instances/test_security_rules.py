"""The security groups `provision` makes, read back from the EC2 API and compared, rule by rule, with the table in
docs/security.md (the documented set): no rule missing, none wider, none more; each instance in its role's groups.

The real runs use the running localcloud (moto's EC2 API + containers as hosts: `provision` waits for SSH) with a
cluster of its own (SECURITY_RULES_CLUSTER, default nar-<random>), one boot server and one worker, and terminate only
that cluster's instances. The refusals and check mode on a new cluster use the suite's plain moto endpoint.
"""

import os
import pathlib
import re
import secrets

import boto3
import pytest
import yaml

import playbook_runner
from aws_endpoint import client_env
from cluster_instances_helpers import IMAGE_ID, REGION, ROOT, failed_tasks, moto_client, node_image

DOC = pathlib.Path(ROOT) / "docs" / "security.md"
LOCALCLOUD_IMAGE_ID = os.environ.get("E2E_IMAGE_ID", "ami-0deb120000000e71a")  # localcloud's Debian 12 + Erlang image
CONTROLLER_CIDR = "172.31.0.1/32"  # the controller's address on localcloud's bridge
# The example application's HTTP port (examples/hello_cluster), from the controller (what `make demo` opens) and from the
# boot servers (where a rolling restart's health gates fetch it): a source by CIDR and one by the cluster's group name.
HTTP_RULE = {"proto": "tcp", "ports": ["8080"], "cidr_ip": CONTROLLER_CIDR, "rule_desc": "hello_cluster HTTP, from the controller"}
HEALTH_RULE = {"proto": "tcp", "ports": ["8080"], "group_name": "{base}-boot-servers", "rule_desc": "health gates, from the boot servers"}
ROLE_GROUPS = {"boot_server": "{base}-boot-servers", "worker": "{base}-workers"}


def role_defaults(role):
    with open(os.path.join(ROOT, "roles", role, "defaults", "main.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def documented_rows():
    """The rows of docs/security.md's rule table: [{"group", "protocol", "ports", "source"}], cells without backticks."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 6:
            group, dummy_on, protocol, ports, source, why = (cell.replace("`", "") for cell in cells)
            assert why, "docs/security.md: a rule without its why: %s" % line
            rows.append({"group": group, "protocol": protocol, "ports": ports, "source": source})
    assert rows, "docs/security.md has no rule table"
    return rows


def documented_rules(base, values, extra_rules):
    """{group name: {(protocol, from port, to port, source)}} as the table says for these values, where source is a
    CIDR or a group name."""
    def resolve(text):
        text = text.replace("<base>", base)
        return values.get(text, text)

    def port_range(text):
        low, dummy, high = text.partition("-")
        return int(resolve(low)), int(resolve(high or low))

    rules = {}
    for row in documented_rows():
        group = resolve(row["group"])
        rules.setdefault(group, set())
        if row["protocol"] == "none":
            continue
        if row["protocol"] == "per rule":
            for rule in extra_rules:
                for ports in rule["ports"]:
                    rules[group].add((rule["proto"],) + port_range(str(ports)) + (rule.get("cidr_ip") or rule["group_name"],))
            continue
        rules[group].add((row["protocol"],) + port_range(row["ports"]) + (resolve(row["source"]),))
    return rules


def default_values(ssh_cidr):
    erlang, boot_server = role_defaults("erlang"), role_defaults("boot_server")
    return {"provision_ssh_cidr": ssh_cidr, "erlang_dist_port_min": erlang["erlang_dist_port_min"],
            "erlang_dist_port_max": erlang["erlang_dist_port_max"],
            "provision_boot_server_file_port": boot_server["boot_server_file_port"]}


def groups_of(ec2, names):
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": list(names)}])["SecurityGroups"]
    return dict((g["GroupName"], g) for g in found)


def actual_rules(ec2, names):
    """{group name: {(protocol, from, to, source)}} of the groups as EC2 has them (sources by CIDR or group name)."""
    groups = groups_of(ec2, names)
    by_id = dict((g["GroupId"], g["GroupName"]) for g in ec2.describe_security_groups()["SecurityGroups"])
    rules = {}
    for name, group in groups.items():
        rules[name] = set()
        for perm in group["IpPermissions"]:
            key = (perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"))
            sources = ([r["CidrIp"] for r in perm.get("IpRanges", [])] + [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])]
                       + [by_id.get(p["GroupId"], p["GroupId"]) for p in perm.get("UserIdGroupPairs", [])]
                       + [p["PrefixListId"] for p in perm.get("PrefixListIds", [])])
            assert sources, "a rule without a source: %s" % perm
            rules[name] |= set(key + (source,) for source in sources)
    return rules


def egress_of(ec2, names):
    return dict((name, [(p["IpProtocol"], [r["CidrIp"] for r in p.get("IpRanges", [])]) for p in g["IpPermissionsEgress"]])
                for name, g in groups_of(ec2, names).items())


def group_names(base):
    return [base, base + "-workers", base + "-boot-servers"]


def instance_groups(ec2, cluster):
    """{instance id: (role, {group names})} of the cluster's live instances."""
    reply = ec2.describe_instances(Filters=[{"Name": "tag:erlang-cluster", "Values": [cluster]},
                                            {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    found = {}
    for reservation in reply["Reservations"]:
        for instance in reservation["Instances"]:
            tags = dict((t["Key"], t["Value"]) for t in instance.get("Tags", []))
            found[instance["InstanceId"]] = (tags.get("erlang-role"), set(g["GroupName"] for g in instance["SecurityGroups"]))
    return found


def snapshot(ec2, cluster, base):
    """Everything a provision run could change about the groups: rules, egress, membership."""
    return actual_rules(ec2, group_names(base)), egress_of(ec2, group_names(base)), instance_groups(ec2, cluster)


# ---------------------------------------------------------------- localcloud: real runs


class Provisioned:
    """A cluster `provision` made on localcloud: 1 boot server and 1 worker, the example's HTTP port opened."""

    def __init__(self, endpoint_url, workdir):
        from localcloud_cluster import Cluster  # imports localcloud: only when these tests run

        self.name = os.environ.get("SECURITY_RULES_CLUSTER") or "nar-" + secrets.token_hex(3)
        self.base = "erlang-" + self.name
        self.cluster = Cluster(endpoint_url, workdir, self.name, secrets.token_hex(20))
        self.ec2 = self.cluster.ec2
        self.extra_rules = [HTTP_RULE, dict(HEALTH_RULE, group_name=HEALTH_RULE["group_name"].format(base=self.base))]

    def provision(self, *args, check=False, extra=None):
        extra_vars = {"cluster_name": self.name, "provision_image_id": LOCALCLOUD_IMAGE_ID, "provision_ssh_cidr": CONTROLLER_CIDR,
                      "provision_key_name": "localcloud", "provision_worker_count": 1, "provision_boot_server_count": 1,
                      "provision_extra_rules": self.extra_rules,
                      "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
        extra_vars.update(extra or {})
        env = dict(self.cluster.env(), ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
        return playbook_runner.run_playbook("skunkworks.erlang_ec2.provision", *args, inventory="localhost,", check_mode=check,
                                            env=env, extra_vars=extra_vars)

    def expected(self, **values):
        return documented_rules(self.base, dict(default_values(CONTROLLER_CIDR), **values), self.extra_rules)

    def downgrade(self):
        """The state an earlier provision left: one group on every node, the loader's ports open from it."""
        base = groups_of(self.ec2, [self.base])[self.base]
        for instance_id in instance_groups(self.ec2, self.name):
            self.ec2.modify_instance_attribute(InstanceId=instance_id, Groups=[base["GroupId"]])
        groups = groups_of(self.ec2, group_names(self.base))
        role_ids = set(groups[name]["GroupId"] for name in group_names(self.base)[1:])
        citing = [dict(p, UserIdGroupPairs=[g for g in p["UserIdGroupPairs"] if g["GroupId"] in role_ids]) for p in base["IpPermissions"]
                  if [g for g in p.get("UserIdGroupPairs", []) if g["GroupId"] in role_ids]]
        if citing:  # the health gate's rule names the boot servers' group, which earlier versions did not have
            self.ec2.revoke_security_group_ingress(GroupId=base["GroupId"], IpPermissions=[
                dict((k, v) for k, v in p.items() if k in ("IpProtocol", "FromPort", "ToPort", "UserIdGroupPairs")) for p in citing])
        for name in (self.base + "-boot-servers", self.base + "-workers"):  # the boot servers' rules refer to the workers'
            self.ec2.delete_security_group(GroupId=groups[name]["GroupId"])
        pair = [{"GroupId": base["GroupId"]}]
        self.ec2.authorize_security_group_ingress(GroupId=base["GroupId"], IpPermissions=[
            {"IpProtocol": "udp", "FromPort": 4368, "ToPort": 4368, "UserIdGroupPairs": pair},
            {"IpProtocol": "tcp", "FromPort": 4368, "ToPort": 4368, "UserIdGroupPairs": pair}])

    def cleanup(self):
        ids = list(instance_groups(self.ec2, self.name))
        if ids:
            self.ec2.terminate_instances(InstanceIds=ids)
            self.cluster.wait_state(ids, "terminated")
        groups = groups_of(self.ec2, group_names(self.base))
        for name in (self.base, self.base + "-boot-servers", self.base + "-workers"):  # each before the groups it refers to
            if name in groups:
                self.ec2.delete_security_group(GroupId=groups[name]["GroupId"])


@pytest.fixture(scope="module")
def provisioned(endpoint_url, tmp_path_factory):
    p = Provisioned(endpoint_url, tmp_path_factory.mktemp("security_rules"))
    try:
        run = p.provision()
        assert run.returncode == 0, run
        yield p
    finally:
        p.cleanup()


def test_the_groups_hold_exactly_the_documented_rules(provisioned):
    expected = provisioned.expected()
    assert set(expected) == set(group_names(provisioned.base))
    actual = actual_rules(provisioned.ec2, expected)
    for group in expected:
        assert actual.get(group) == expected[group], "%s: missing %s, not documented %s" % (
            group, sorted(expected[group] - actual.get(group, set())), sorted(actual.get(group, set()) - expected[group]))
    # Nothing open to the world, and the cluster's ports never from a CIDR but the controller's SSH.
    for group, rules in actual.items():
        assert not [r for r in rules if r[3] in ("0.0.0.0/0", "::/0")], (group, rules)
    # Egress: EC2's default, untouched.
    assert all(rules == [("-1", ["0.0.0.0/0"])] for rules in egress_of(provisioned.ec2, expected).values())


def test_each_instance_is_in_every_node_group_and_its_roles_group(provisioned):
    members = instance_groups(provisioned.ec2, provisioned.name)
    assert sorted(role for role, dummy in members.values()) == ["boot_server", "worker"], members
    for instance_id, (role, groups) in members.items():
        assert groups == {provisioned.base, ROLE_GROUPS[role].format(base=provisioned.base)}, (instance_id, role, groups)


def test_a_second_run_and_a_check_run_change_nothing(provisioned):
    before = snapshot(provisioned.ec2, provisioned.name, provisioned.base)
    again = provisioned.provision()
    assert again.returncode == 0 and again.changed == 0, again
    check = provisioned.provision(check=True)
    assert check.returncode == 0 and check.changed == 0, check
    assert snapshot(provisioned.ec2, provisioned.name, provisioned.base) == before


def test_the_rules_follow_the_roles_port_variables(provisioned):
    """The distribution range is the erlang role's variables, the file port provision_boot_server_file_port: a run
    with others rewrites exactly those rules (the documented set for those values), and the defaults come back."""
    values = {"erlang_dist_port_min": 9200, "erlang_dist_port_max": 9210, "provision_boot_server_file_port": 4400}
    try:
        run = provisioned.provision(extra=values)
        assert run.returncode == 0, run
        expected = provisioned.expected(**values)
        assert actual_rules(provisioned.ec2, expected) == expected
    finally:
        back = provisioned.provision()
    assert back.returncode == 0, back
    assert actual_rules(provisioned.ec2, provisioned.expected()) == provisioned.expected()


def test_a_cluster_from_an_earlier_version_is_narrowed(provisioned):
    """One wide group on every node (the loader's ports open from it), no role groups: check mode reports and changes
    nothing; a run adds the role groups to the running instances and removes the wide rules; the next run changes
    nothing."""
    provisioned.downgrade()
    try:
        old = snapshot(provisioned.ec2, provisioned.name, provisioned.base)
        assert ("udp", 4368, 4368, provisioned.base) in old[0][provisioned.base] and len(old[0]) == 1
        check = provisioned.provision(check=True)
        assert check.returncode == 0 and check.changed > 0, check
        assert snapshot(provisioned.ec2, provisioned.name, provisioned.base) == old
    finally:
        run = provisioned.provision()
    assert run.returncode == 0, run
    assert actual_rules(provisioned.ec2, group_names(provisioned.base)) == provisioned.expected()
    for instance_id, (role, groups) in instance_groups(provisioned.ec2, provisioned.name).items():
        assert groups == {provisioned.base, ROLE_GROUPS[role].format(base=provisioned.base)}, (instance_id, role, groups)
    again = provisioned.provision()
    assert again.returncode == 0 and again.changed == 0, again


# ---------------------------------------------------------------- plain moto: refusals and check mode


def provision_on_moto(clean_aws, *extra, check=False, extra_vars=None):
    args = ["-e", "cluster_name=narmoto", "-e", "provision_image_id=%s" % IMAGE_ID, "-e", "provision_ssh_cidr=203.0.113.7/32",
            "-e", "provision_worker_count=0"] + list(extra)
    env = playbook_runner.ansible_env(client_env(clean_aws, REGION), ANSIBLE_LOCALHOST_WARNING="false",
                                      ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    return playbook_runner.run_playbook("skunkworks.erlang_ec2.provision", *args, inventory="localhost,", check_mode=check, env=env,
                                        extra_vars=dict({"ansible_connection": "local",
                                                         "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                                                        **(extra_vars or {})))


def rule(**fields):
    return dict({"proto": "tcp", "ports": ["8080"], "cidr_ip": "10.0.0.0/16", "rule_desc": "the application's HTTP"}, **fields)


BAD_EXTRA_RULES = [
    ("not a list", "Elements value for option 'provision_extra_rules'", "tcp 8080"),
    ("no source", "one of the following is required", [{"proto": "tcp", "ports": ["8080"], "rule_desc": "http"}]),
    ("two sources", "mutually exclusive", [rule(group_id="sg-0123456789abcdef0")]),
    ("no why", "missing required arguments: rule_desc", [{"proto": "tcp", "ports": ["8080"], "cidr_ip": "10.0.0.0/16"}]),
    ("a protocol not allowed", "proto", [rule(proto="icmp")]),
    ("an unknown option", "ip_ranges", [rule(ip_ranges=["10.0.0.0/16"])]),
    ("not a port", "port 80a is not N or N-M", [rule(ports=["80a"])]),
    ("out of range", "ports 8080-70000 are not a range within 1-65535", [rule(ports=["8080-70000"])]),
    ("not a CIDR", "cidr_ip 10.0.0/16 is not an IPv4 CIDR", [rule(cidr_ip="10.0.0/16")]),
    ("the distribution range", "overlap the cluster port(s) 9100-9155 (tcp)", [rule(ports=["9000-9100"])]),
    ("EPMD", "overlap the cluster port(s) 4369-4369 (tcp)", [rule(from_port=4360, to_port=4370, ports=None)]),
    ("the boot server's discovery", "overlap the cluster port(s) 4368-4368 (udp)", [rule(proto="udp", ports=["4368"])]),
    ("SSH", "overlap the cluster port(s) 22-22 (tcp)", [rule(ports=["22"], cidr_ip="0.0.0.0/0")]),
    ("another group by name", "group_name lb is not one of the cluster's groups (erlang-narmoto, erlang-narmoto-workers,",
     [rule(cidr_ip=None, group_name="lb")]),
]


@pytest.mark.parametrize("what,message,rules", BAD_EXTRA_RULES, ids=[case[0] for case in BAD_EXTRA_RULES])
def test_bad_extra_rules_are_refused_before_any_request(clean_aws, what, message, rules):
    rules = [dict((k, v) for k, v in r.items() if v is not None) for r in rules] if isinstance(rules, list) else rules
    run = provision_on_moto(clean_aws, extra_vars={"provision_extra_rules": rules})
    assert run.returncode != 0, (what, run)
    text = " ".join(run.out.split())
    assert message in text, (what, run)
    assert sum(clean_aws.counts().values()) == 0, (what, clean_aws.counts())


def test_a_good_extra_rule_passes_the_checks_and_check_mode_creates_nothing(clean_aws):
    rules = [rule(), rule(ports=["9000-9099"]), rule(cidr_ip=None, group_name="erlang-narmoto-boot-servers"),
             rule(cidr_ip=None, group_name="erlang-narmoto")]
    run = provision_on_moto(clean_aws, check=True, extra_vars={"provision_extra_rules": [
        dict((k, v) for k, v in r.items() if v is not None) for r in rules]})
    assert run.returncode == 0, run
    assert clean_aws.mutating_calls() == 0, clean_aws.counts()
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=clean_aws.url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]


def test_a_bad_distribution_range_is_refused_before_any_request(clean_aws):
    for values in ({"erlang_dist_port_min": 9155, "erlang_dist_port_max": 9100}, {"erlang_dist_port_min": 4300, "erlang_dist_port_max": 4400},
                   {"erlang_dist_port_min": 80, "erlang_dist_port_max": 90}):
        run = provision_on_moto(clean_aws, extra_vars=values)
        assert run.returncode != 0, (values, run)
        assert re.search(r"erlang_dist_port_min/max a range within 1024-65535 without 4368 and 4369 \(got %d-%d\)"
                         % (values["erlang_dist_port_min"], values["erlang_dist_port_max"]), " ".join(run.out.split())), run
        assert "Nothing was changed." in run.out
    assert sum(clean_aws.counts().values()) == 0


@pytest.mark.parametrize("autoscaling", [False, True], ids=["cluster_instances join=self", "Auto Scaling launch template"])
def test_self_joining_workers_get_the_workers_group(clean_aws, autoscaling):
    """The self-join paths: cluster_instances with join=self, and the Auto Scaling group's launch template. moto's
    instances never answer SSH, so the run may fail at its last step (the wait for SSH) and nowhere else."""
    ec2 = moto_client(clean_aws)
    image_id = node_image(ec2)
    extra = ["-e", "provision_worker_count=1", "-e", "provision_join=self", "-e", "provision_node_image_id=%s" % image_id,
             "-e", "provision_ssh_timeout=1"] + (["-e", "provision_autoscaling=true"] if autoscaling else [])
    run = provision_on_moto(clean_aws, *extra)
    assert run.returncode == 0 or failed_tasks(run) == ["Provision | Wait for SSH on every node"], (failed_tasks(run), run)
    base = "erlang-narmoto"
    ids = dict((g["GroupName"], g["GroupId"]) for g in groups_of(ec2, group_names(base)).values())
    members = instance_groups(ec2, "narmoto")
    assert sorted(role for role, dummy in members.values()) == ["boot_server", "worker"], members
    for instance_id, (role, groups) in members.items():
        assert groups == {base, ROLE_GROUPS[role].format(base=base)}, (instance_id, role, groups)
    if autoscaling:
        version = ec2.describe_launch_template_versions(LaunchTemplateName="erlang-narmoto-worker",
                                                        Versions=["$Latest"])["LaunchTemplateVersions"][0]
        assert sorted(version["LaunchTemplateData"]["SecurityGroupIds"]) == sorted([ids[base], ids[base + "-workers"]])
