"""Bad input: every playbook variable and every module option of a type that can be wrong gets a wrong value,
generated from the specs (each playbook's `_common_vars_spec`, read as scripts/awx_surveys.py reads them; each
module's options as ansible-doc gives them, i.e. its argument_spec with its doc fragments). Each run must fail with
an error naming the variable and change nothing: the cluster's state is compared before and after, and a
reconcile run afterwards reports changed=0.

Speed: one ansible-playbook run per variables check of a playbook (validate_argument_spec lists every bad variable
of its spec at once), and one ansible-playbook run for all the module options (one task each, on the controller:
an AnsibleModule rejects its arguments before it does anything).
"""

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import playbook_runner
from failures_lib import snapshot
from playbook_runner import BIN, ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import awx_surveys  # noqa: E402  # the one reader of the playbooks' specs

# A value of the wrong type for each type (str and path take any scalar: choices are checked instead).
BAD = {"int": "many", "bool": "maybe", "list": {"not": "a list"}, "dict": "not-a-dict"}
CHOICE_BAD = "no-such-choice"
# A placeholder of the right type for a required option that is not the one under test.
GOOD = {"int": 1, "bool": False, "list": [], "dict": {}, "str": "x", "path": "/nonexistent", "raw": "x"}


def bad_value(option):
    if option.get("choices"):
        return CHOICE_BAD
    return BAD.get(option.get("type", "str"))


def playbook_checks(good_path):
    """[(playbook, {variable: value})]: one entry per variables check the playbook runs (its first failing check stops
    the play, so each check gets its own run; a variable is tried at the first check that knows it), a misspelt
    variable in the first one, and the required variables of the checks before given good values."""
    checks = []
    for playbook in awx_surveys.PLAYBOOKS:
        path = os.path.join(ROOT, "playbooks", playbook + ".yml")
        found = []
        awx_surveys._walk(awx_surveys.load_yaml(path), os.path.dirname(path), ROOT, found, {path})  # pylint: disable=protected-access
        specs = []
        for spec in found:  # aws_region/aws_endpoint_url are checked by the same task as the spec before them
            if specs and set(spec) <= {"aws_region", "aws_endpoint_url"}:
                specs[-1] = dict(specs[-1], **spec)
            else:
                specs.append(spec)
        tried, good = set(), {}
        for index, spec in enumerate(specs):
            bad = {name: bad_value(opt) for name, opt in spec.items() if bad_value(opt) is not None and name not in tried}
            own = sorted(n for n in spec if n.startswith(playbook.split("_")[0] + "_"))
            if index == 0 and own:
                bad[own[0] + "x"] = 1  # a misspelt variable is refused, not ignored
            if bad:
                checks.append((playbook, dict(good, **bad), sorted(bad)))
            tried |= set(bad)
            good.update({name: good_path if opt.get("type") == "path" else GOOD[opt.get("type", "str")]
                         for name, opt in spec.items() if opt.get("required") and name != "cluster_name"})
    return checks


def module_cases():
    """[(module, option, args)]: every option with a bad value, the module's required options given good ones."""
    names = sorted("skunkworks.erlang_ec2." + f[:-3] for f in os.listdir(os.path.join(ROOT, "plugins", "modules")) if f.endswith(".py"))
    docs = json.loads(subprocess.run([os.path.join(BIN, "ansible-doc"), "-t", "module", "-j"] + names, capture_output=True, text=True,
                                     check=True, env=playbook_runner.ansible_env(), cwd=ROOT).stdout)
    cases = []
    for name in names:
        options = docs[name]["doc"]["options"]
        required = {k: GOOD[o.get("type", "str")] if not o.get("choices") else o["choices"][0] for k, o in options.items() if o.get("required")}
        for option, spec in sorted(options.items()):
            value = bad_value(spec)
            if value is not None:
                cases.append((name, option, dict(required, **{option: value}), spec))
        # A required option left out.
        for option in sorted(k for k in required):
            cases.append((name, option, {k: v for k, v in required.items() if k != option}, options[option]))
    return cases


def test_bad_values_are_refused_and_change_nothing(cluster, releases, row, tmp_path):
    """bad input: every playbook variable and module option given a bad value (generated from the specs)"""
    checks, cases = playbook_checks(releases["v1"]), module_cases()
    assert len(checks) >= 10 and len(cases) >= 50, (len(checks), len(cases))
    before = snapshot(cluster)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda check: cluster.playbook(check[0], check=False, extra=check[1]), checks))
    for (playbook, given, bad), result in zip(checks, results):
        assert result.rc != 0, (playbook, bad)
        assert result.changed == 0, (playbook, result.recap)
        missing = [name for name in bad if name not in result.out]
        assert not missing, "%s: the error does not name %s:\n%s" % (playbook, missing, result.tail(20))

    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local", "tasks": [
        {"name": "%s %s %d" % (module, option, i), module: args, "register": "r%d" % i, "ignore_errors": True}
        for i, (module, option, args, dummy) in enumerate(cases)] + [
        {"name": "every module refused its arguments", "ansible.builtin.assert": {"that": ["r%d is failed" % i for i in range(len(cases))]}},
        {"name": "the messages", "ansible.builtin.debug": {"msg": ["%d\t{{ r%d.msg | replace('\\n', ' ') }}" % (i, i) for i in range(len(cases))]}}]}]
    playbook = playbook_runner.write_play(tmp_path / "bad_module_args.json", play)
    result = playbook_runner.run_playbook(str(playbook), inventory="localhost,", env=cluster.env,
                                          extra_vars={"ansible_python_interpreter": os.path.join(ROOT, ".venv", "bin", "python")})
    assert result.rc == 0, result.tail(40)
    assert result.changed == 0, result.recap
    messages = {int(m.group(1)): m.group(2) for m in re.finditer(r'^\s*"(\d+)\\t(.*?)",?$', result.out, re.M)}
    assert len(messages) == len(cases), (len(messages), result.tail(10))
    # Each refusal names the option it is about; ansible-core's own message for a dict option that has suboptions
    # ("dictionary requested, could not parse JSON or key=value") does not: those are listed in the row.
    unnamed = {(m, o) for i, (m, o, a, spec) in enumerate(cases) if o not in messages[i]}
    core_dict = {(m, o) for m, o, a, spec in cases if spec.get("type") == "dict" and spec.get("suboptions") and isinstance(a.get(o), str)}
    assert unnamed == core_dict, sorted(unnamed ^ core_dict)

    after = snapshot(cluster)
    assert after == before
    again = cluster.playbook("reconcile")
    assert again.changed == 0, again.recap
    row.did = ("%d playbook runs (%d variables of %d playbooks) and %d module calls (%d modules) refused, each naming the variable "
               "or option%s; changed=0 each; state unchanged; reconcile afterwards changed=0"
               % (len(checks), sum(len(b) for p, g, b in checks), len({p for p, g, b in checks}), len(cases), len({c[0] for c in cases}),
                  " except %s (ansible-core: 'dictionary requested, could not parse JSON or key=value')"
                  % ", ".join("%s %s" % (m.split(".")[-1], o) for m, o in sorted(unnamed)) if unnamed else ""))
    row.close()
    row.check()
