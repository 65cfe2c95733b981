"""AWX's run path, end to end on localcloud: the inventory update as AWX runs it, the import as AWX stores it, the
job inventory as AWX writes it, and the jobs (site, deploy v1 -> v2, rolling_restart, reconcile) through
ansible-runner with the credentials as AWX injects them. Then every artifact of every job is scanned for the
cookie and the AWS secret key.

The jobs run once for the session (fixture `jobs`); each job's effect is observed right after it and asserted by
the tests. See docs/awx.md, "AWX's run path, tested".
"""

import json
import os
import subprocess
import sys

import pytest

import awx_mimic
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.cluster import cluster_group
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT as LAYOUT

# A stale allow-list entry planted before reconcile (TEST-NET-1: never a real worker).
STALE_IP = "192.0.2.77"
# A tag value that looks like a template: anyone allowed to tag instances writes these.
TEMPLATE_TAG = "{{ 6 * 7 }}"


def boot_eval(cluster, expression):
    """An Erlang expression on the boot server node (erl_call as the service user, cookie from its file)."""
    node = "boot@%s" % cluster.boot_server_ip
    proc = subprocess.run(
        ["ssh", "-i", cluster.env["LOCALCLOUD_SSH_KEY"], "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "admin@%s" % cluster.boot_server_ip,
         "sudo -u %s env HOME=%s erl_call -name %s -R -timeout 10 -e" % (LAYOUT["user"], LAYOUT["home"], node)],
        input=expression + "\n", capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.strip().startswith("{ok,"), (proc.stdout, proc.stderr)
    return proc.stdout.strip()


def current_release(cluster):
    proc = cluster.ssh(cluster.boot_server_ip, "readlink %s" % LAYOUT["current_link"])
    assert proc.returncode == 0, proc.stderr
    return os.path.basename(proc.stdout.strip())


def rollout_log(cluster):
    proc = cluster.ssh(cluster.boot_server_ip, "sudo cat %s" % LAYOUT["rollout_log"])
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()] if proc.returncode == 0 else []


def persisted_allow_list(cluster):
    proc = cluster.ssh(cluster.boot_server_ip, "sudo cat %s" % LAYOUT["allow_list_file"])
    assert proc.returncode == 0, proc.stderr
    return sorted(line.strip() for line in proc.stdout.splitlines() if line.strip() and not line.startswith("#"))


def versions(cluster):
    return {ip: (cluster.status(ip, timeout=3.0) or {}).get("version") for ip in cluster.workers.values()}


def job_summary(runner):
    return {"status": runner.status, "rc": runner.rc, "stats": runner.stats}


SURVEYS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                       "awx", "surveys")


def survey_extra_vars(playbook, answers):
    """The extra vars AWX sends for these survey answers: each must be a question of the job template's survey
    (awx/surveys/PLAYBOOK.json), and its value goes as that question's type sends it (text and multiplechoice as
    strings, integer as a number)."""
    with open(os.path.join(SURVEYS, "%s.json" % playbook)) as handle:
        questions = dict((q["variable"], q) for q in json.load(handle)["spec"])
    extra = {}
    for variable, answer in answers.items():
        assert variable in questions, "%s is not a question of the %s survey" % (variable, playbook)
        question = questions[variable]
        if question["type"] == "multiplechoice":
            assert str(answer) in question["choices"], (variable, answer, question["choices"])
        extra[variable] = int(answer) if question["type"] == "integer" else str(answer)
    return extra


@pytest.fixture(scope="session")
def jobs(awx):
    """The job templates run once, in the order an operator runs them; what each changed, seen right after it."""
    cluster = awx.cluster
    awx.update_inventory()
    survey = {"cluster_name": cluster.name}
    seen = {}

    def run(name, playbook, extra):
        runner = awx.run_job(name, playbook, survey_extra_vars(playbook, dict(survey, **extra)))
        seen[name] = {"job": job_summary(runner)}
        assert runner.status == "successful" and runner.rc == 0, (name, runner.status, runner.rc, runner.stdout.read()[-6000:])
        return seen[name]

    run("site", "site", {"site_initial_release": cluster.releases["v1"]})
    seen["site"]["after"] = {"current": current_release(cluster), "versions": versions(cluster)}
    run("deploy", "deploy", {"deploy_release": cluster.releases["v2"], "deploy_restart": "true"})
    seen["deploy"]["after"] = {"current": current_release(cluster), "versions": versions(cluster)}
    before = rollout_log(cluster)
    run("rolling_restart", "rolling_restart", {"rolling_restart_serial": 1, "rolling_restart_rollback_on_failure": "true"})
    seen["rolling_restart"]["after"] = {"versions": versions(cluster), "new_log": rollout_log(cluster)[len(before):]}
    boot_eval(cluster, "erlang_ec2_boot_server:add_slave({%s})." % STALE_IP.replace(".", ","))
    allow_list_before = persisted_allow_list(cluster)
    run("reconcile", "reconcile", {})
    seen["reconcile"].update(before=allow_list_before, after=persisted_allow_list(cluster))
    return seen


def test_inventory_export_has_what_the_playbooks_need(awx):
    """ansible-inventory --list --export, as AWX's inventory update runs it: groups and hostvars of the cluster."""
    awx.update_inventory()
    export = awx.export
    cluster = awx.cluster.refresh()
    boot_id = export["erlang_boot_servers"]["hosts"]
    assert len(boot_id) == 1
    assert sorted(export["erlang_workers"]["hosts"]) == sorted(cluster.workers)
    assert sorted(export[cluster_group(cluster.name)]["hosts"]) == sorted(boot_id + list(cluster.workers))
    assert export["all"]["vars"]["ansible_python_interpreter"] == "/usr/bin/python3"  # the source's group_vars/all
    hostvars = export["_meta"]["hostvars"]

    def plain(value):  # the exported value, marked or not
        return value["__ansible_unsafe"] if isinstance(value, dict) and "__ansible_unsafe" in value else value

    for host, ip in dict(cluster.workers, **{boot_id[0]: cluster.boot_server_ip}).items():
        role = "boot" if host == boot_id[0] else "worker"
        assert plain(hostvars[host]["ansible_host"]) == ip
        assert plain(hostvars[host]["erlang_node"]) == "%s@%s" % (role, ip)
        assert plain(hostvars[host]["erlang_boot_server_ip"]) == cluster.boot_server_ip
        assert plain(hostvars[host]["erlang_boot_server_host"]) == boot_id[0]
        assert plain(hostvars[host]["erlang_boot_node"]) == "boot@%s" % cluster.boot_server_ip
        assert plain(hostvars[host]["erlang_cluster"]) == cluster.name


def test_what_awx_stores_is_what_the_job_reads(awx, tmp_path):
    """AWX stores each exported value as it parsed it (json.load: an unsafe-marked value stays the dict
    {"__ansible_unsafe": ...}); the job's inventory script hands that back to ansible-core, whose script plugin
    reads the marker back: the job sees the plain value, still not templated (a Jinja-looking EC2 tag stays text)."""
    worker = sorted(awx.cluster.refresh().workers)[0]
    ip = awx.cluster.workers[worker]
    awx.cluster.boto3("ec2").create_tags(Resources=[worker], Tags=[{"Key": "awx-test-note", "Value": TEMPLATE_TAG}])
    stored = awx.update_inventory()
    stored_vars = stored.host_variables(worker)
    # What AWX keeps: with ansible-core 2.19+, the EC2-derived strings as marker dicts (docs/awx.md).
    for key, value in (("erlang_node", "worker@%s" % ip), ("ansible_host", ip), ("erlang_boot_server_ip", awx.cluster.boot_server_ip)):
        assert stored_vars[key] in ({"__ansible_unsafe": value}, value), (key, stored_vars[key])
    assert stored_vars["ec2_tags"]["awx-test-note"] == {"__ansible_unsafe": TEMPLATE_TAG}  # must never be trusted
    inventory = awx_mimic.write_job_inventory(str(tmp_path), stored)
    out = subprocess.run(["ansible", worker, "-i", inventory, "-m", "ansible.builtin.debug", "-a",
                          "msg={{ {'node': erlang_node, 'boot': erlang_boot_server_ip, 'host': ansible_host, 'note': ec2_tags['awx-test-note'],"
                          " 'types': [erlang_node is string, ansible_host is string, erlang_boot_server_host is string],"
                          " 'boot_host_vars': hostvars[erlang_boot_server_host].erlang_node} }}"],
                         env=dict(awx.base_env(), ANSIBLE_COLLECTIONS_PATH=awx.collections_path(), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                                  ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json"),
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    msg = json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"][worker]["msg"]
    assert msg == {"node": "worker@%s" % ip, "boot": awx.cluster.boot_server_ip, "host": ip, "note": TEMPLATE_TAG,
                   "types": [True, True, True], "boot_host_vars": "boot@%s" % awx.cluster.boot_server_ip}, msg


def test_jobs_succeed_and_take_effect(jobs, awx):
    for name in ("site", "deploy", "rolling_restart", "reconcile"):
        assert jobs[name]["job"]["status"] == "successful" and jobs[name]["job"]["rc"] == 0, jobs[name]
    workers = awx.cluster.workers
    assert jobs["site"]["after"] == {"current": "1.0.0", "versions": {ip: "1.0.0" for ip in workers.values()}}
    assert jobs["deploy"]["after"] == {"current": "2.0.0", "versions": {ip: "2.0.0" for ip in workers.values()}}
    assert jobs["rolling_restart"]["after"]["versions"] == {ip: "2.0.0" for ip in workers.values()}
    new_log = jobs["rolling_restart"]["after"]["new_log"]
    assert [(e.get("kind"), e.get("release_version"), e.get("result")) for e in new_log] == [("rolling_restart", "2.0.0", "ok")], new_log
    assert STALE_IP in jobs["reconcile"]["before"]
    assert jobs["reconcile"]["after"] == sorted(workers.values())
    assert jobs["reconcile"]["job"]["stats"]["changed"], jobs["reconcile"]["job"]


def test_no_cookie_nor_aws_secret_in_any_job_artifact(jobs, awx):
    """Every job event (event_data, res, stdout), every artifact file (stdout, command, fact cache, ...) of every
    job: the cookie 0 times; the AWS secret key 0 times, but for one place: ansible-runner itself records the
    environment it was given in artifacts/<ident>/command (0600, written before ansible starts, as in AWX's
    execution environment), where the AWS credential's variable is, as AWX's AWS credential injects it. The cookie
    credential is a file, so its path is there, never the cookie."""
    total = {"files": 0, "events": 0}
    found = {}
    for name, pdd, runner in awx.jobs:
        artifacts = os.path.join(pdd, "artifacts")
        hits, counts = awx_mimic.scan(artifacts, [awx.cookie, awx.aws_secret_access_key])
        assert counts["events"] > 10, (name, counts)  # the events are there to be scanned
        total = {k: total[k] + counts[k] for k in total}
        command = os.path.join(runner.config.ident, "command")
        with open(os.path.join(artifacts, command)) as handle:
            recorded = json.load(handle)
        assert os.stat(os.path.join(artifacts, command)).st_mode & 0o077 == 0
        assert recorded["env"]["AWS_SECRET_ACCESS_KEY"] == awx.aws_secret_access_key
        assert recorded["env"]["ERLANG_EC2_COOKIE_FILE"].startswith(os.path.join(pdd, "env") + os.sep)
        expected = {awx.cookie: [], awx.aws_secret_access_key: [(command, 1)]}
        if hits != expected:
            found[name] = hits
    sys.stderr.write("awx run path: scanned %(events)d job events in %(files)d artifact files of %(jobs)d jobs\n"
                     % dict(total, jobs=len(awx.jobs)))
    assert not found, found
    assert len(awx.jobs) >= 4 and total["events"] > 100, total


def test_the_scanner_finds_a_planted_cookie(tmp_path):
    """The scan can fail: a cookie planted in a fake job event (escaped as JSON escapes it), in a stdout file and
    in a fact cache is found; a clean tree gives no hit."""
    cookie, secret = "awxck-planted/\u00e9+cookie", "awxsk-planted"
    events = tmp_path / "artifacts" / "7" / "job_events"
    events.mkdir(parents=True)
    event = {"uuid": "1", "event": "runner_on_ok", "event_data": {"res": {"stdout": "the cookie is %s" % cookie}}}
    (events / "1-aaaa.json").write_text(json.dumps(event))  # ensure_ascii: the é is \\u00e9 in the file
    (events / "2-bbbb.json").write_text(json.dumps({"uuid": "2", "event": "runner_on_ok", "event_data": {}}))
    (tmp_path / "artifacts" / "7" / "stdout").write_text("ok\n%s\n" % secret)
    (tmp_path / "artifacts" / "7" / "fact_cache").mkdir()
    (tmp_path / "artifacts" / "7" / "fact_cache" / "host1").write_text(json.dumps({"x": cookie}, ensure_ascii=False))
    hits, counts = awx_mimic.scan(str(tmp_path / "artifacts"), [cookie, secret])
    assert counts == {"files": 4, "events": 2}
    assert sorted(path for path, dummy in hits[cookie]) == ["7/fact_cache/host1", "7/job_events/1-aaaa.json"], hits
    assert hits[secret] == [("7/stdout", 1)]
    clean, dummy = awx_mimic.scan(str(tmp_path / "artifacts"), ["awxck-not-there"])
    assert clean == {"awxck-not-there": []}
