"""What AWX does with an inventory source and a job, reduced to the steps that touch our data.

Read from AWX's own code (github.com/ansible/awx, devel):
- inventory update (awx/main/tasks/jobs.py, RunInventoryUpdate.build_args / build_env): runs
  `ansible-inventory --list --export -i <source> --output <artifacts>/output.json --playbook-dir <dir>` with
  STANDARD_INVENTORY_UPDATE_ENV (awx/main/constants.py: ANSIBLE_INVENTORY_EXPORT=True,
  ANSIBLE_INVENTORY_UNPARSED_FAILED=True, ...) and the credentials' environment;
- import (post_run_hook -> awx/main/management/commands/inventory_import.py perform_update): plain `json.load`
  of output.json, awx/main/utils/mem_inventory.py dict_to_mem_data (groups, their hosts, children and vars;
  `_meta.hostvars` into each host's variables; the `all` group's vars become the inventory's variables), then each
  host's and group's variables are stored as `json.dumps(variables)`. Nothing there knows `__ansible_unsafe`: a
  value the plugin left untrusted is stored as the dict {"__ansible_unsafe": "..."};
- job (BaseTask.build_inventory / write_inventory_file, awx/main/models/inventory.py Inventory.get_script_data):
  the job's inventory is `inventory/hosts`, an executable Python script printing
  json.dumps({"all": {"vars", "hosts", "children": every group}, <group>: {"hosts", "children", "vars"},
  "_meta": {"hostvars": {host: variables + remote_tower_enabled/remote_tower_id/...}}}); ansible-core reads it with
  its `script` inventory plugin;
- credentials (awx/main/models/credential.py inject_credential): a custom credential's `file` injector writes
  the rendered template to a mkstemp file in <private_data_dir>/env (0600) and its `env` injector points a variable
  at it; runner gets suppress_env_files=True and, with a fact cache, fact_cache_type=jsonfile.
"""

import json
import os
import stat
import tempfile

# awx/main/constants.py
STANDARD_INVENTORY_UPDATE_ENV = {
    "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    "ANSIBLE_INVENTORY_EXPORT": "True",
    "ANSIBLE_VERBOSE_TO_STDERR": "True",
    "ANSIBLE_HOST_PATTERN_MISMATCH": "error",
}


class StoredInventory:
    """What AWX's database holds after an import: inventory variables, groups, hosts (variables as stored JSON)."""

    def __init__(self):
        self.variables = "{}"
        self.groups = {}  # name -> {"variables": json text, "hosts": [names], "children": [names]}
        self.hosts = {}  # name -> {"variables": json text, "id": int, "enabled": bool}

    def host_variables(self, name):
        return json.loads(self.hosts[name]["variables"])


def import_inventory(data):
    """inventory_import.perform_update on `data` (what json.load gave): dict_to_mem_data, then the stored rows."""
    data = dict(data)
    meta = data.pop("_meta", {})
    mem_groups, mem_hosts, all_vars = {}, {}, {}

    def group(name):
        return mem_groups.setdefault(name, {"variables": {}, "hosts": [], "children": []})

    def host(name):
        return mem_hosts.setdefault(name, {})

    for name, value in data.items():
        target = None if name in ("all", "ungrouped") else group(name)
        if not isinstance(value, dict):
            continue
        for host_name in value.get("hosts", []) or []:
            host(host_name)
            if target is not None and host_name not in target["hosts"]:
                target["hosts"].append(host_name)
        variables = value.get("vars", {}) or {}
        if target is None:
            all_vars.update(variables)
        else:
            target["variables"].update(variables)
        for child in value.get("children", []) or []:
            if child in ("all", "ungrouped"):
                continue
            group(child)
            if target is not None and child not in target["children"]:
                target["children"].append(child)
    for name, variables in (meta.get("hostvars") or {}).items():
        if name in mem_hosts:
            mem_hosts[name].update(variables)

    stored = StoredInventory()
    stored.variables = json.dumps(all_vars)
    for name, mem in mem_groups.items():
        stored.groups[name] = {"variables": json.dumps(mem["variables"]), "hosts": list(mem["hosts"]), "children": list(mem["children"])}
    for number, name in enumerate(sorted(mem_hosts), start=1):
        stored.hosts[name] = {"variables": json.dumps(mem_hosts[name]), "id": number, "enabled": True}
    return stored


def script_data(stored):
    """Inventory.get_script_data(hostvars=True, towervars=True): what the job's inventory script prints."""
    hosts = sorted(name for name, row in stored.hosts.items() if row["enabled"])
    data = {"all": {}}
    variables = json.loads(stored.variables)
    if variables:
        data["all"]["vars"] = variables
    grouped = set()
    for name, row in stored.groups.items():
        info = {}
        members = [h for h in row["hosts"] if h in hosts]
        if members:
            info["hosts"] = members
            grouped.update(members)
        if row["children"]:
            info["children"] = list(row["children"])
        group_vars = json.loads(row["variables"])
        if group_vars:
            info["vars"] = group_vars
        if info:
            data[name] = info
    data["all"]["hosts"] = [h for h in hosts if h not in grouped]
    if stored.groups:
        data["all"]["children"] = list(stored.groups)
    data["_meta"] = {"hostvars": {}}
    for name in hosts:
        hostvars = stored.host_variables(name)
        for prefix in ("host", "tower"):
            hostvars.update({"remote_%s_enabled" % prefix: "true", "remote_%s_id" % prefix: stored.hosts[name]["id"]})
        data["_meta"]["hostvars"][name] = hostvars
    return data


def write_job_inventory(private_data_dir, stored):
    """BaseTask.write_inventory_file: <private_data_dir>/inventory/hosts, a 0700 script printing the JSON."""
    content = "#! /usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint(%r)\n" % json.dumps(script_data(stored))
    directory = os.path.join(private_data_dir, "inventory")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "hosts")
    with open(path, "w") as handle:
        handle.write(content)
    os.chmod(path, 0o700)
    return path


def inject_file_credential(private_data_dir, content):
    """A custom credential's `file` injector: the rendered template in a mkstemp file under env/, 0600; its path."""
    directory = os.path.join(private_data_dir, "env")
    os.makedirs(directory, exist_ok=True)
    handle, path = tempfile.mkstemp(dir=directory)
    with os.fdopen(handle, "w") as out:
        out.write(content)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


def unsafe_values(value, path=""):
    """The paths of every {"__ansible_unsafe": ...} left in a stored value (what AWX keeps as a dict)."""
    found = []
    if isinstance(value, dict):
        if "__ansible_unsafe" in value:
            return [path or "."]
        for key, item in value.items():
            found += unsafe_values(item, "%s.%s" % (path, key) if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += unsafe_values(item, "%s[%d]" % (path, index))
    return found


def scan(root, needles):
    """Count each needle in every file under `root` (job events, stdout, command, fact cache...), bytes as read.

    Returns ({needle: [(relative path, count)]}, {"files": n, "events": n})."""
    hits = {needle: [] for needle in needles}
    counts = {"files": 0, "events": 0}
    for directory, dummy, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                blob = handle.read()
            counts["files"] += 1
            if os.path.basename(directory) == "job_events" and name.endswith(".json"):
                counts["events"] += 1
                # The event as parsed too: a value escaped in the JSON text (\\uXXXX) is compared decoded.
                blob += b"\n" + json.dumps(json.loads(blob.decode("utf-8")), ensure_ascii=False).encode("utf-8")
            for needle in needles:
                count = blob.count(needle.encode("utf-8"))
                if count:
                    hits[needle].append((os.path.relpath(path, root), count))
    return hits, counts
