"""The AWX objects under awx/: the cookie credential type's fixed shape, one job template per playbook with
its survey and credentials, the workflow, and the inventory source file for the collection's plugin."""
import json
import os
import subprocess
import sys

import pytest

import survey_check
from test_surveys import WORKFLOW_SURVEY, top_level_playbooks


def load(root, *parts):
    return survey_check._load(os.path.join(root, "awx", *parts))


@pytest.fixture(scope="module")
def job_templates(root):
    return load(root, "vars", "job_templates.yml")["awx_job_templates"]


def test_cookie_credential_type_is_a_file_never_an_extra_var(root):
    # The shape the controller side and the erlang role are built against (docs/awx.md).
    assert load(root, "vars", "credential_type.yml")["awx_credential_type"] == {
        "name": "Erlang cluster cookie (skunkworks.erlang_ec2)",
        "description": "Cookie of an Erlang cluster, given to skunkworks.erlang_ec2's erlang role as a file.",
        "kind": "cloud",
        "inputs": {"fields": [{"id": "cookie", "type": "string", "label": "Cookie", "secret": True}], "required": ["cookie"]},
        "injectors": {"file": {"template": "{{ cookie }}"}, "env": {"ERLANG_EC2_COOKIE_FILE": "{{ tower.filename }}"}},
    }


def test_cookie_templates_are_left_to_awx(root):
    """Ansible must not render the injector templates when configure.yml reads them: they are !unsafe."""
    with open(os.path.join(root, "awx", "vars", "credential_type.yml"), encoding="utf-8") as f:
        text = f.read()
    assert 'template: !unsafe "{{ cookie }}"' in text
    assert 'ERLANG_EC2_COOKIE_FILE: !unsafe "{{ tower.filename }}"' in text


def test_one_job_template_per_playbook(root, job_templates):
    assert sorted(jt["playbook"] for jt in job_templates) == sorted("playbooks/%s.yml" % p for p in top_level_playbooks(root))
    assert len(set(jt["name"] for jt in job_templates)) == len(job_templates)
    for jt in job_templates:
        playbook = os.path.basename(jt["playbook"])[:-4]
        assert jt["survey"] == "surveys/%s.json" % playbook
        assert os.path.isfile(os.path.join(root, jt["playbook"]))
        with open(os.path.join(root, "awx", jt["survey"]), encoding="utf-8") as f:
            survey = json.load(f)
        assert survey["name"] == jt["name"]
        # Variables a survey cannot carry are extra variables: the template must prompt for them.
        assert jt["ask_variables_on_launch"] is ("extra variables" in survey["description"]), jt["name"]
        assert set(jt["credentials"]) <= {"machine", "aws", "cookie"}
        assert "machine" in jt["credentials"]


def test_credentials_where_the_playbooks_need_them(root, job_templates):
    by_playbook = dict((os.path.basename(jt["playbook"])[:-4], set(jt["credentials"])) for jt in job_templates)
    # The EC2 API: the playbooks that validate aws_region/aws_endpoint_url.
    aws = set(p for p in top_level_playbooks(root) if "aws_region" in survey_check.spec_of(root, [p]))
    assert aws == {"provision", "decommission", "bake_image"}
    assert set(p for p, creds in by_playbook.items() if "aws" in creds) == aws
    # The cookie: the playbooks that run the erlang role's main tasks or node_image (they write the cookie).
    assert set(p for p, creds in by_playbook.items() if "cookie" in creds) == {"site", "bake_image"}


def test_workflow_runs_provision_site_deploy(root, job_templates):
    workflow = load(root, "vars", "workflow.yml")["awx_workflow"]
    names = dict((os.path.basename(jt["playbook"])[:-4], jt["name"]) for jt in job_templates)
    nodes = workflow["nodes"]
    assert [n["unified_job_template"]["name"] for n in nodes] == [names["provision"], names["site"], names["deploy"]]
    assert all(n["unified_job_template"]["type"] == "job_template" for n in nodes)
    assert [n["related"]["success_nodes"] for n in nodes] == [[{"identifier": "site"}], [{"identifier": "deploy"}], []]
    assert workflow["survey"] == "surveys/" + WORKFLOW_SURVEY
    assert workflow["ask_variables_on_launch"] is True  # provision_subnet_ids, provision_tags, rolling_restart_health_mfa


def test_inventory_source_file_is_read_by_the_collection_plugin(root):
    path = os.path.join(root, "awx", "inventory", "aws.erlang_ec2.yml")
    config = survey_check._load(path)
    assert config["plugin"] == "skunkworks.erlang_ec2.ec2"
    doc = json.loads(subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "-t", "inventory", "--json", "skunkworks.erlang_ec2.ec2"],
                                    check=True, capture_output=True, text=True).stdout)
    options = doc["skunkworks.erlang_ec2.ec2"]["doc"]["options"]
    known = set(options) | set(a for o in options.values() for a in o.get("aliases", []))
    assert sorted(set(config) - known - {"plugin"}) == []
    # A file cache does not outlive AWX's update container: AWX's update_on_launch is the cache.
    assert config["cache"] is False
    from ansible_collections.skunkworks.erlang_ec2.plugins.inventory.ec2 import InventoryModule
    assert InventoryModule().verify_file(path)


def test_configure_reads_the_files_it_is_given(root):
    with open(os.path.join(root, "awx", "configure.yml"), encoding="utf-8") as f:
        text = f.read()
    for name in ("vars/credential_type.yml", "vars/job_templates.yml", "vars/workflow.yml"):
        assert name in text
    play = survey_check._load(os.path.join(root, "awx", "configure.yml"))[0]
    assert play["vars"]["awx_inventory_source_path"] == "awx/inventory/aws.erlang_ec2.yml"
    modules = [next(k for k in task if k.startswith("awx.awx.")) for task in play["tasks"][1:]]
    assert modules == ["awx.awx.credential_type", "awx.awx.credential", "awx.awx.credential", "awx.awx.project",
                       "awx.awx.inventory", "awx.awx.inventory_source", "awx.awx.job_template", "awx.awx.workflow_job_template"]
    # The secrets it may be given never reach the output.
    assert all(task.get("no_log") is True for task in play["tasks"] if "awx.awx.credential" in task)
