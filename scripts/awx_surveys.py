#!/usr/bin/env python3
"""Generate AWX/Tower survey specs (awx/surveys/*.json) from the playbooks' argument specs.

Each playbook in playbooks/ validates its variables first with the _common role's validate_vars.yml and an
inline `_common_vars_spec` (plus the tasks and playbooks it imports, and aws_region/aws_endpoint_url with
`_common_vars_aws`). This script reads those specs and writes one survey per playbook, and one for the
provision -> site -> deploy workflow, so the surveys cannot drift from the playbooks:

    python scripts/awx_surveys.py            # (re)write awx/surveys/
    python scripts/awx_surveys.py --check    # exit 1 and name the files that differ

Type mapping (AWX has no bool or list survey type; docs/awx.md):
  str -> text, or multiplechoice with the spec's choices, or password when the spec says no_log;
  path, raw -> text; int -> integer;
  bool -> multiplechoice "true"/"false" (a string: validate_argument_spec accepts it and the playbooks
  read these variables through `| bool`); list, dict -> not in the survey (a survey answer is a string,
  the playbook needs a list or a dict): given as extra variables, the survey's description names them.
A question has a default only where the spec has one: an empty answer leaves the playbook's own default.
"""
import argparse
import json
import os
import sys

import yaml

PLAYBOOKS = ("provision", "site", "deploy", "rollback", "rolling_restart", "push", "reconcile",
             "decommission", "bake_image", "status", "rotate_cookie")
# The workflow job template and the playbooks it runs, in order.
WORKFLOW = ("provision_site_deploy", ("provision", "site", "deploy"))
JOB_TEMPLATE_PREFIX = "Erlang EC2 | "
SURVEY_TYPES = {"str": "text", "path": "text", "raw": "text", "int": "integer", "bool": "multiplechoice"}
EXTRA_VARS_TYPES = ("list", "dict")
BOOL_CHOICES = ["true", "false"]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe loader that keeps `!unsafe` and `!vault` scalars as plain strings."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)  # nosec - a SafeLoader subclass


def _aws_spec(root):
    """aws_region and aws_endpoint_url, as the _common role's validate_vars.yml checks them."""
    tasks = load_yaml(os.path.join(root, "roles", "_common", "tasks", "validate_vars.yml"))
    for task in tasks:
        spec = (task.get("vars") or {}).get("_common_vars_aws_spec")
        if spec:
            return spec
    raise ValueError("roles/_common/tasks/validate_vars.yml: no _common_vars_aws_spec")


def _is_validate_vars(node):
    for key in ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role"):
        ref = node.get(key)
        if isinstance(ref, dict) and ref.get("name", "").endswith("._common") and ref.get("tasks_from") == "validate_vars.yml":
            return True
    return False


def _walk(node, base, root, specs, seen):
    """Collect (spec dict, with aws?) from a play/task tree, following static imports in file order."""
    if isinstance(node, list):
        for item in node:
            _walk(item, base, root, specs, seen)
        return
    if not isinstance(node, dict):
        return
    if _is_validate_vars(node):
        variables = node.get("vars") or {}
        specs.append(variables.get("_common_vars_spec") or {})
        if str(variables.get("_common_vars_aws", False)).lower() in ("true", "yes", "1"):
            specs.append(_aws_spec(root))
    for key in ("ansible.builtin.import_tasks", "import_tasks", "ansible.builtin.import_playbook", "import_playbook"):
        if isinstance(node.get(key), str):
            path = os.path.normpath(os.path.join(base, node[key]))
            if path not in seen:
                seen.add(path)
                _walk(load_yaml(path), os.path.dirname(path), root, specs, seen)
    for key in ("tasks", "pre_tasks", "post_tasks", "block", "rescue", "always"):
        if key in node:
            _walk(node[key], base, root, specs, seen)


def playbook_spec(root, playbook):
    """The merged argument spec of a playbook: {variable: option}, in the order validation meets them."""
    path = os.path.join(root, "playbooks", playbook + ".yml")
    specs = []
    _walk(load_yaml(path), os.path.dirname(path), root, specs, {path})
    if not specs:
        raise ValueError("%s: no _common validate_vars.yml with a _common_vars_spec" % path)
    return merge_specs(specs)


def merge_specs(specs):
    """One spec from several: a variable checked more than once (cluster_name) is required if any check says so,
    with the first description."""
    merged = {}
    for spec in specs:
        for name, option in spec.items():
            if name in merged:
                merged[name] = dict(merged[name], required=bool(merged[name].get("required")) or bool(option.get("required")))
            else:
                merged[name] = dict(option)
    return merged


def _text(value):
    return " ".join(str(value).split()) if value is not None else ""


def question(name, option):
    kind = option.get("type", "str")
    q = {
        "question_name": name,
        "question_description": _text(option.get("description")),
        "variable": name,
        "required": bool(option.get("required", False)),
        "type": SURVEY_TYPES[kind],
    }
    if option.get("no_log") and kind == "str":
        q["type"] = "password"  # a secret (rotate_cookie's new cookie): AWX encrypts the answer and never shows it
    if kind == "bool":
        q["choices"] = list(BOOL_CHOICES)
        if "default" in option:
            q["default"] = "true" if option["default"] else "false"
    else:
        if option.get("choices"):
            q["type"] = "multiplechoice"
            q["choices"] = [str(c) for c in option["choices"]]
        if "default" in option:
            q["default"] = option["default"] if kind == "int" else str(option["default"])
    return q


def survey(title, spec):
    questions, extra = [], []
    for name, option in spec.items():
        kind = option.get("type", "str")
        if kind in EXTRA_VARS_TYPES:
            extra.append("%s (%s%s)" % (name, kind, ", required" if option.get("required") else ""))
            continue
        if kind not in SURVEY_TYPES:
            raise ValueError("%s: variable %s has type %s, which has no survey mapping" % (title, name, kind))
        questions.append(question(name, option))
    description = "Generated from the playbook's argument spec by scripts/awx_surveys.py."
    if extra:
        description += " Not in the survey, give them as extra variables (YAML): " + ", ".join(extra) + "."
    return {"name": JOB_TEMPLATE_PREFIX + title, "description": description, "spec": questions}


def workflow_spec(root, playbooks):
    return merge_specs(playbook_spec(root, playbook) for playbook in playbooks)


def generate(root):
    """{relative path: file text} of every survey."""
    out = {}
    for playbook in PLAYBOOKS:
        out[os.path.join("awx", "surveys", playbook + ".json")] = survey(playbook, playbook_spec(root, playbook))
    name, playbooks = WORKFLOW
    out[os.path.join("awx", "surveys", "workflow_" + name + ".json")] = survey(" -> ".join(playbooks), workflow_spec(root, playbooks))
    return dict((path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n") for path, doc in out.items())


def drift(root):
    """Paths whose committed text differs from what generate() makes (missing, changed, or extra)."""
    wanted = generate(root)
    differ = []
    for path, text in sorted(wanted.items()):
        full = os.path.join(root, path)
        if not os.path.exists(full):
            differ.append(path + " (missing)")
        else:
            with open(full, encoding="utf-8") as f:
                if f.read() != text:
                    differ.append(path + " (differs)")
    surveys = os.path.join(root, "awx", "surveys")
    for name in sorted(os.listdir(surveys)) if os.path.isdir(surveys) else []:
        if os.path.join("awx", "surveys", name) not in wanted:
            differ.append(os.path.join("awx", "surveys", name) + " (not generated)")
    return differ


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), help="repository root")
    parser.add_argument("--check", action="store_true", help="compare with awx/surveys/ instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        differ = drift(args.root)
        for path in differ:
            print("awx_surveys: out of date: %s (run: python scripts/awx_surveys.py)" % path, file=sys.stderr)
        return 1 if differ else 0
    for path, text in sorted(generate(args.root).items()):
        full = os.path.join(args.root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(text)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
