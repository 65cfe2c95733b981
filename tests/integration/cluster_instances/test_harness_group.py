"""The test harness's security group (tests/integration/harness_group.py), on the suite's moto endpoint: made with its
rules once, whatever the number of suites that ask at the same time, and never widened by asking again."""

import threading

import pytest

import harness_group


def rules(ec2, group_id):
    """{(protocol, from, to, source)} of the group's ingress."""
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    found = set()
    for perm in group["IpPermissions"]:
        key = (perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"))
        found |= {key + (r["CidrIp"],) for r in perm.get("IpRanges", [])}
        found |= {key + (g["GroupId"],) for g in perm.get("UserIdGroupPairs", [])}
    return found


def test_concurrent_callers_get_one_group_with_exactly_its_rules(clean_aws):
    results, errors = [], []

    def ask():
        try:
            results.append(harness_group.security_group_ids(harness_group.ec2_client(clean_aws.url, "us-east-1")))
        except Exception as error:  # pylint: disable=broad-except  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=ask) for dummy in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(results) == 8 and len(set(map(tuple, results))) == 1, results
    ec2 = harness_group.ec2_client(clean_aws.url, "us-east-1")
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [harness_group.HARNESS_GROUP]}])["SecurityGroups"]
    assert [g["GroupId"] for g in groups] == results[0]
    group_id = results[0][0]
    assert groups[0]["VpcId"] == harness_group.default_vpc(ec2)
    assert rules(ec2, group_id) == {("tcp", 22, 22, "172.31.0.1/32"), ("tcp", 8080, 8080, "172.31.0.1/32"), ("-1", None, None, group_id)}
    # Asking again changes nothing.
    before = clean_aws.mutating_calls()
    assert harness_group.security_group_ids(ec2) == [group_id]
    assert clean_aws.mutating_calls() == before


def test_a_missing_rule_is_added_back_and_nothing_else(clean_aws):
    ec2 = harness_group.ec2_client(clean_aws.url, "us-east-1")
    group_id = harness_group.ensure(ec2)
    ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
                                                                        "IpRanges": [{"CidrIp": "172.31.0.1/32"}]}])
    assert ("tcp", 8080, 8080, "172.31.0.1/32") not in rules(ec2, group_id)
    assert harness_group.ensure(ec2) == group_id
    assert rules(ec2, group_id) == {("tcp", 22, 22, "172.31.0.1/32"), ("tcp", 8080, 8080, "172.31.0.1/32"), ("-1", None, None, group_id)}


def test_refuses_an_endpoint_that_is_not_local():
    with pytest.raises(ValueError, match="not a local endpoint"):
        harness_group.ec2_client("https://ec2.example.invalid", "us-east-1")
