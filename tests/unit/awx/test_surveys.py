"""The AWX surveys (awx/surveys/) against the playbooks' argument specs: generated and committed alike,
checked directly, and shown to catch drift on a temporary copy of the repository."""
import glob
import json
import os
import re
import shutil

import pytest
import yaml

import survey_check

WORKFLOW_SURVEY = "workflow_provision_site_deploy.json"
WORKFLOW_PLAYBOOKS = ["provision", "site", "deploy"]


def top_level_playbooks(root):
    return sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(root, "playbooks", "*.yml")))


def surveys_to_check(root):
    out = dict((p + ".json", [p]) for p in top_level_playbooks(root))
    out[WORKFLOW_SURVEY] = WORKFLOW_PLAYBOOKS
    return out


def test_every_playbook_has_a_survey(root, generator):
    assert sorted(generator.PLAYBOOKS) == top_level_playbooks(root)
    assert sorted(os.listdir(os.path.join(root, "awx", "surveys"))) == sorted(surveys_to_check(root))


def test_committed_surveys_are_the_generated_ones(root, generator):
    assert generator.drift(root) == []
    assert generator.main(["--root", root, "--check"]) == 0


def test_committed_surveys_match_the_specs(root):
    assert survey_check.check(root, surveys_to_check(root)) == {}


def test_surveys_carry_the_spec_details(root):
    """Spot checks of the mapping, read straight from the committed files."""
    def survey(name):
        with open(os.path.join(root, "awx", "surveys", name), encoding="utf-8") as f:
            return dict((q["variable"], q) for q in json.load(f)["spec"])

    provision = survey("provision.json")
    assert provision["cluster_name"]["required"] is True and provision["cluster_name"]["type"] == "text"
    assert provision["provision_join"]["type"] == "multiplechoice" and provision["provision_join"]["choices"] == ["push", "self"]
    assert provision["provision_autoscaling"]["choices"] == ["true", "false"]
    assert provision["provision_worker_count"]["type"] == "integer" and "default" not in provision["provision_worker_count"]
    assert "aws_region" in provision and "provision_subnet_ids" not in provision and "provision_tags" not in provision
    deploy = survey("deploy.json")
    assert deploy["deploy_release"]["required"] is True and deploy["deploy_release"]["type"] == "text"
    # The rolling restart's variables count for deploy: it imports their check and the rolling_restart playbook.
    assert deploy["rolling_restart_timeout"]["type"] == "integer"
    assert "rolling_restart_health_mfa" not in deploy
    assert set(survey("reconcile.json")) == {"cluster_name"}
    workflow = survey(WORKFLOW_SURVEY)
    assert workflow["cluster_name"]["required"] is True  # provision requires it
    assert {"provision_image_id", "site_join_timeout", "deploy_release"} <= set(workflow)


# -- drift, on a temporary copy -----------------------------------------------------------------

@pytest.fixture
def copy(root, tmp_path):
    """The parts the generator and the check read: playbooks/, roles/_common/tasks/, awx/."""
    shutil.copytree(os.path.join(root, "playbooks"), tmp_path / "playbooks")
    shutil.copytree(os.path.join(root, "roles", "_common", "tasks"), tmp_path / "roles" / "_common" / "tasks")
    shutil.copytree(os.path.join(root, "awx"), tmp_path / "awx")
    return str(tmp_path)


def edit_spec(root, relpath, change):
    """Apply change(holder) to the dict holding _common_vars_spec in root/relpath (YAML round trip)."""
    path = os.path.join(root, relpath)
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    holders = list(survey_check._find(doc, "_common_vars_spec"))
    assert len(holders) == 1
    change(holders[0])
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False)


def problems(root):
    return survey_check.check(root, surveys_to_check(root))


def test_copy_starts_clean(copy, generator):
    assert problems(copy) == {}
    assert generator.drift(copy) == []


@pytest.mark.parametrize("relpath, change, survey, message", [
    ("playbooks/deploy.yml", lambda h: h["_common_vars_spec"]["deploy_restart"].update(type="int"),
     "deploy.json", "deploy_restart: survey type multiplechoice, want integer (spec type int)"),
    ("playbooks/provision.yml", lambda h: h["_common_vars_spec"]["provision_join"].update(choices=["push", "self", "auto"]),
     "provision.json", "provision_join: choices ['push', 'self'], want ['push', 'self', 'auto']"),
    ("playbooks/site.yml", lambda h: h["_common_vars_spec"]["site_join_timeout"].update(required=True),
     "site.json", "site_join_timeout: required False, the spec says True"),
    ("playbooks/status.yml", lambda h: h["_common_vars_spec"]["status_rollouts"].update(default=3),
     "status.json", "status_rollouts: default None, the spec says 3"),
    ("playbooks/reconcile.yml", lambda h: h["_common_vars_spec"].update(reconcile_dry_run={"type": "bool"}),
     "reconcile.json", "reconcile_dry_run: in the spec, not in the survey"),
    ("playbooks/provision.yml", lambda h: h.update(_common_vars_aws=False),
     "provision.json", "aws_region: in the survey, not in the playbook's spec"),
    ("playbooks/decommission.yml", lambda h: h["_common_vars_spec"]["decommission_hosts"].update(required=False),
     "decommission.json", "decommission_hosts: not in the survey and not named as an extra variable in its description"),
    # The shared rolling restart check counts for every playbook that imports it.
    ("playbooks/tasks/check_rolling_restart_vars.yml", lambda h: h["_common_vars_spec"]["rolling_restart_pause"].update(type="str"),
     "rollback.json", "rolling_restart_pause: survey type integer, want text (spec type str)"),
])
def test_spec_drift_is_reported(copy, generator, relpath, change, survey, message):
    edit_spec(copy, relpath, change)
    found = problems(copy)
    assert message in found.get(survey, []), found
    assert os.path.join("awx", "surveys", survey) + " (differs)" in generator.drift(copy)
    assert generator.main(["--root", copy, "--check"]) == 1
    # Regenerating fixes it, and the independent check agrees with the new survey.
    assert generator.main(["--root", copy]) == 0
    assert generator.drift(copy) == []
    assert problems(copy) == {}


def test_shared_spec_drift_reaches_every_importer(copy):
    edit_spec(copy, "playbooks/tasks/check_rolling_restart_vars.yml",
              lambda h: h["_common_vars_spec"]["rolling_restart_timeout"].update(type="str"))
    assert sorted(problems(copy)) == ["deploy.json", "push.json", "rollback.json", "rolling_restart.json", WORKFLOW_SURVEY]


def test_hand_edited_survey_is_reported(copy, generator):
    path = os.path.join(copy, "awx", "surveys", "site.json")
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    doc["spec"] = [q for q in doc["spec"] if q["variable"] != "site_initial_release"]
    doc["spec"][0]["default"] = "demo"  # cluster_name
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    assert sorted(problems(copy)["site.json"]) == [
        "cluster_name: default 'demo', the spec has none (an empty answer keeps the playbook's default)",
        "site_initial_release: in the spec, not in the survey",
    ]
    assert generator.drift(copy) == [os.path.join("awx", "surveys", "site.json") + " (differs)"]


def test_unknown_spec_type_is_an_error(copy, generator):
    edit_spec(copy, "playbooks/status.yml", lambda h: h["_common_vars_spec"]["status_rollouts"].update(type="float"))
    with pytest.raises(ValueError, match="status_rollouts has type float, which has no survey mapping"):
        generator.generate(copy)


# -- bool answers are strings ------------------------------------------------------------------

CONDITION_KEYS = ("when", "that", "failed_when", "changed_when", "until")
JINJA = re.compile(r"{{(.*?)}}|{%(.*?)%}", re.S)
# A bool variable passed whole to a module option of type bool: the module converts "false" itself.
MODULE_BOOL_OPTIONS = {("bake_image_no_reboot", "no_reboot")}  # amazon.aws.ec2_ami


def _expressions(node, key=None):
    """(key, expression) for every Jinja expression in a parsed playbook or tasks file."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _expressions(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _expressions(v, key)
    elif isinstance(node, str):
        if key in CONDITION_KEYS and "{{" not in node:
            yield key, node
        for a, b in JINJA.findall(node):
            yield key, a or b


def bool_uses(root):
    """(bad uses, bool variables never used) of the bool playbook variables in playbooks/."""
    spec = survey_check.spec_of(root, top_level_playbooks(root))
    bools = sorted(n for n, options in spec.items() if options[0].get("type") == "bool")
    assert bools, "no bool variables found"
    uses = dict((name, 0) for name in bools)
    bad = []
    exprs = []
    for path in glob.glob(os.path.join(root, "playbooks", "**", "*.yml"), recursive=True):
        with open(path, encoding="utf-8") as f:
            exprs += [(path, key, expr) for key, expr in _expressions(yaml.safe_load(f))]
    for path in glob.glob(os.path.join(root, "playbooks", "**", "*.j2"), recursive=True):
        with open(path, encoding="utf-8") as f:
            exprs += [(path, None, a or b) for a, b in JINJA.findall(f.read())]
    for path, key, expr in exprs:
        for name in bools:
            for m in re.finditer(r"\b%s\b" % name, expr):
                uses[name] += 1
                if re.match(r"\s*(\|\s*default\([^()]*\)\s*)?\|\s*bool\b", expr[m.end():]) or (name, key) in MODULE_BOOL_OPTIONS:
                    continue
                bad.append("%s: %s" % (os.path.relpath(path, root), " ".join(expr.split())))
    return bad, [n for n, count in uses.items() if count == 0]


def test_bool_variables_are_read_through_the_bool_filter(root):
    """A survey gives a bool as the string "true"/"false" (validate_argument_spec accepts it but does not
    convert the variable): every use of a bool playbook variable must go through `| bool`."""
    assert bool_uses(root) == ([], [])


def test_bool_variable_without_the_filter_is_reported(copy):
    path = os.path.join(copy, "playbooks", "deploy.yml")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.count("deploy_restart | default(true) | bool") == 1
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace("deploy_restart | default(true) | bool", "deploy_restart | default(true)"))
    assert bool_uses(copy) == (["playbooks/deploy.yml: deploy_restart | default(true)"], [])
