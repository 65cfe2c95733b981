"""Check committed AWX surveys against the playbooks' argument specs, read here independently of
scripts/awx_surveys.py (its own reading of the playbooks and its own type table), so a bug in the
generator is not repeated by the check."""
import json
import os
import re

import yaml

IMPORT = re.compile(r"^\s*(?:-\s+)?(?:ansible\.builtin\.)?import_(?:tasks|playbook):\s*(\S+)\s*$", re.M)
# spec type -> (survey type, choices or None); list and dict cannot be survey answers.
EXPECTED = {
    "str": ("text", None),
    "path": ("text", None),
    "raw": ("text", None),
    "int": ("integer", None),
    "bool": ("multiplechoice", ["true", "false"]),
}
NOT_IN_SURVEY = ("list", "dict")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)  # nosec - SafeLoader subclass


def _find(node, key):
    """Every dict in node (any depth) that has key."""
    if isinstance(node, dict):
        if key in node:
            yield node
        for value in node.values():
            yield from _find(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from _find(value, key)


def _files(path, seen):
    """path and every file it imports statically (import_tasks, import_playbook), depth first."""
    if path in seen:
        return
    seen.add(path)
    yield path
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for target in IMPORT.findall(text):
        yield from _files(os.path.normpath(os.path.join(os.path.dirname(path), target.strip("'\""))), seen)


def spec_of(root, playbooks):
    """{variable: [option, ...]} of the given playbooks (every place a variable is checked)."""
    aws = next(_find(_load(os.path.join(root, "roles", "_common", "tasks", "validate_vars.yml")), "_common_vars_aws_spec"))
    out = {}
    seen = set()
    for playbook in playbooks:
        for path in _files(os.path.join(root, "playbooks", playbook + ".yml"), seen):
            for holder in _find(_load(path), "_common_vars_spec"):
                specs = [holder["_common_vars_spec"]]
                if holder.get("_common_vars_aws") in (True, "true", "yes"):
                    specs.append(aws["_common_vars_aws_spec"])
                for spec in specs:
                    for name, option in spec.items():
                        out.setdefault(name, []).append(option)
    return out


def check_survey(survey, spec):
    """Problems of one survey against {variable: [option, ...]}; [] when they agree."""
    problems = []
    questions = {}
    for q in survey.get("spec", []):
        if q["variable"] in questions:
            problems.append("%s: asked twice" % q["variable"])
        questions[q["variable"]] = q
    for name in sorted(set(questions) - set(spec)):
        problems.append("%s: in the survey, not in the playbook's spec" % name)
    for name, options in sorted(spec.items()):
        option = options[0]
        kind = option.get("type", "str")
        required = any(o.get("required", False) for o in options)
        q = questions.get(name)
        if kind in NOT_IN_SURVEY:
            if q is not None:
                problems.append("%s: a %s cannot be a survey answer" % (name, kind))
            elif "%s (%s%s)" % (name, kind, ", required" if required else "") not in survey.get("description", ""):
                problems.append("%s: not in the survey and not named as an extra variable in its description" % name)
            continue
        if q is None:
            problems.append("%s: in the spec, not in the survey" % name)
            continue
        want_type, want_choices = EXPECTED[kind]
        if option.get("choices"):
            want_type, want_choices = "multiplechoice", [str(c) for c in option["choices"]]
        if option.get("no_log") and kind == "str":
            want_type = "password"
        if q.get("type") != want_type:
            problems.append("%s: survey type %s, want %s (spec type %s)" % (name, q.get("type"), want_type, kind))
        choices = q.get("choices")
        if isinstance(choices, str):
            choices = choices.split("\n")
        if choices != want_choices and not (want_choices is None and choices is None):
            problems.append("%s: choices %s, want %s" % (name, choices, want_choices))
        if bool(q.get("required")) != required:
            problems.append("%s: required %s, the spec says %s" % (name, q.get("required"), required))
        if "default" in option:
            want_default = option["default"]
            if kind == "bool":
                want_default = "true" if want_default else "false"
            elif kind != "int":
                want_default = str(want_default)
            if q.get("default") != want_default:
                problems.append("%s: default %r, the spec says %r" % (name, q.get("default"), want_default))
        elif "default" in q:
            problems.append("%s: default %r, the spec has none (an empty answer keeps the playbook's default)" % (name, q["default"]))
    return problems


def check(root, surveys):
    """{survey file: problems} for {survey file: [playbook, ...]}, only those with problems."""
    out = {}
    for name, playbooks in surveys.items():
        with open(os.path.join(root, "awx", "surveys", name), encoding="utf-8") as f:
            problems = check_survey(json.load(f), spec_of(root, playbooks))
        if problems:
            out[name] = problems
    return out
