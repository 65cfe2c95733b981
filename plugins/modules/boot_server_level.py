#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: boot_server_level
short_description: Bring a running Erlang boot server level with its peer boot servers
version_added: 0.2.0
description:
  - Calls C(erlang_ec2_boot_server:level/1) on the boot server running on O(node) (of the C(boot_server) role).
    The boot server asks each peer named in its peers file (C(erlang_layout.boot_server_peers_file)) that answers
    in time for its state and adopts the newest, as it does by itself at every start before it serves
    (docs/boot_servers.md).
  - Releases, C(current) and C(previous) come from the boot server (this one included) whose C(current) link
    changed last; the release directories this one lacks are copied from it over distribution (modes and
    mtimes kept, into a temporary directory renamed into place) and the links are switched by renaming a new
    symlink over them. The releases beyond the kept ones are removed as the role's switch does.
  - The allow-list comes from the boot server whose allow-list file changed last; it is set through the boot
    server's own C(set_slaves/1), which rewrites its file atomically (it stays the file's one writer).
  - With O(release_root), run on the boot server's host as root, the module also gives the copied release
    directories and links to C(root:root) (the owner of the role's own installs; the boot server copies them
    as its service user) and removes the releases the service user could not remove.
  - No peer answering changes nothing; RV(peers) says which answered.
author:
  - Skunkworks developers (@skunkworks)
extends_documentation_fragment:
  - skunkworks.erlang_ec2.erlang_node
options:
  release_root:
    description:
      - The boot server's release root (C(erlang_layout.release_root)) on the host the module runs on.
      - When set and the module runs as root, levelled copies are made C(root:root) and releases left beyond the
        kept ones are removed. Not set, only the boot server's own levelling runs.
    type: path
attributes:
  check_mode:
    support: full
    description: The boot server compares itself with its peers and reports what it would change; nothing changes.
  diff_mode:
    support: full
    description: Shows the boot server's current, previous, releases and allow-list before and after.
notes:
  - The timeout for the peers' answers is the boot server's own C(boot_server_level_timeout); O(timeout) bounds the
    whole call, copies included.
"""

EXAMPLES = r"""
- name: Bring the boot server level with the other boot servers
  skunkworks.erlang_ec2.boot_server_level:
    node: boot@172.31.16.4
    release_root: /srv/erlang-ec2
    timeout: 120
  become: true

- name: Only report what differs
  skunkworks.erlang_ec2.boot_server_level:
    node: "{{ erlang_node }}"
  check_mode: true
  register: level
"""

RETURN = r"""
releases_from:
  description: The node whose releases, C(current) and C(previous) were adopted (the node itself when it holds the newest).
  returned: success
  type: str
  sample: boot@172.31.0.4
allow_list_from:
  description: The node whose allow-list was adopted (the node itself when it holds the newest).
  returned: success
  type: str
  sample: boot@172.31.0.4
copied:
  description: Release versions copied from RV(releases_from) (in check mode, that would be).
  returned: success
  type: list
  elements: str
  sample: ["2.0.0"]
links:
  description: The links switched, each C(name) (V(current) or V(previous)), C(before) and C(after) (versions; null for none).
  returned: success
  type: list
  elements: dict
  sample: [{"name": "current", "before": "1.0.0", "after": "2.0.0"}]
allow_list_added:
  description: Addresses put on the allow-list.
  returned: success
  type: list
  elements: str
  sample: ["172.31.0.9"]
allow_list_removed:
  description: Addresses taken off the allow-list.
  returned: success
  type: list
  elements: str
  sample: []
removed_releases:
  description: Release versions removed by the module (beyond the kept ones, left by the boot server's user).
  returned: success
  type: list
  elements: str
  sample: ["0.9.0"]
owner_fixed:
  description: Paths under the release root given to C(root:root).
  returned: success
  type: list
  elements: str
  sample: ["/srv/erlang-ec2/releases/2.0.0"]
peers:
  description: Each peer and whether it answered (V(ok)) or why not.
  returned: success
  type: dict
  sample: {"boot@172.31.16.4": "ok"}
"""

import os
import re
import shutil

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.cluster import ipv4_sort_key
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import to_text
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_module import ErlangNodeModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError

STATE = "erlang_ec2_boot_server:state()"
LEVEL = "erlang_ec2_boot_server:level(%s)"
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")


def none_if_undefined(value):
    return None if value in (None, "undefined") else value


def describe(state):
    """The boot server's state as diff text."""
    lines = ["current: %s" % (none_if_undefined(state.get("current")) or "-"),
             "previous: %s" % (none_if_undefined(state.get("previous")) or "-"),
             "releases: %s" % ", ".join(sorted(state.get("releases") or []))]
    lines += ["allow: %s" % address for address in sorted(state.get("allow_list") or [], key=ipv4_sort_key)]
    return "".join(line + "\n" for line in lines)


def expected_after(before, report):
    after = dict(before)
    after["releases"] = sorted(set(before.get("releases") or []) | set(report["copied"]))
    for link in report["links"]:
        after[link["name"]] = link["after"]
    after["allow_list"] = report["allow_list_after"]
    return after


def fix_owner(module, release_root, check):
    """Give what the boot server's user made under the release root to root:root; the paths changed."""
    fixed = []
    releases = os.path.join(release_root, "releases")
    candidates = [os.path.join(release_root, "current"), os.path.join(release_root, "previous")]
    for top, dirs, files in os.walk(releases, followlinks=False):
        dirs[:] = [d for d in dirs if not (top == releases and d.startswith("."))]
        if top != releases:
            candidates.append(top)
        candidates.extend(os.path.join(top, name) for name in files)
        # Symlinks to directories are listed in dirs but not walked (followlinks=False).
        candidates.extend(os.path.join(top, name) for name in dirs if os.path.islink(os.path.join(top, name)))
    for path in candidates:
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if info.st_uid != 0 or info.st_gid != 0:
            fixed.append(path)
            if not check:
                os.lchown(path, 0, 0)
    return fixed


def remove_unpruned(module, release_root, versions, check):
    removed = []
    for version in versions:
        if not VERSION.match(version):
            module.fail_json(msg="the boot server named an unexpected release directory %r; nothing removed" % version)
        path = os.path.join(release_root, "releases", version)
        if os.path.isdir(path) and not os.path.islink(path):
            removed.append(version)
            if not check:
                # rmtree does not follow symlinks.
                shutil.rmtree(path)
    return removed


def main():
    module = ErlangNodeModule(
        argument_spec=dict(release_root=dict(type="path")),
        supports_check_mode=True,
    )
    node = module.node
    try:
        before = to_text(node.call(STATE))
        report = to_text(node.call(LEVEL % ("true" if module.check_mode else "false")))
    except ErlangNodeError as exc:
        if exc.details and "undef" in repr(exc.details[1]):
            module.fail_json_node(exc, msg="the boot server on %s has no level/1: run the boot_server role's install "
                                           "(a newer erlang_ec2_boot_server) first" % node.node)
        module.fail_json_node(exc)
    if not isinstance(report, dict):
        module.fail_json(msg="levelling did not run on %s: %r (another levelling holds its lock?)" % (node.node, report))
    if report.get("allow_list_result") not in ("ok", None):
        module.fail_json(msg="the boot server could not set the allow-list it levelled to: %s" % report["allow_list_result"])
    links = [dict(name=name, before=none_if_undefined(old), after=none_if_undefined(new))
             for name, old, new in report.get("links") or []]
    report["links"] = links
    allow_before = set(report["allow_list_before"])
    allow_after = set(report["allow_list_after"])
    result = dict(
        releases_from=report["releases_from"],
        allow_list_from=report["allow_list_from"],
        copied=sorted(report["copied"]),
        links=links,
        allow_list_added=sorted(allow_after - allow_before, key=ipv4_sort_key),
        allow_list_removed=sorted(allow_before - allow_after, key=ipv4_sort_key),
        peers=dict((peer, status if status == "ok" else repr(status)) for peer, status in report.get("peers") or []),
        removed_releases=[],
        owner_fixed=[],
    )
    changed = bool(report["changed"])
    release_root = module.params["release_root"]
    if release_root and os.geteuid() == 0 and os.path.isdir(release_root):
        result["removed_releases"] = remove_unpruned(module, release_root, report.get("unpruned") or [], module.check_mode)
        result["owner_fixed"] = fix_owner(module, release_root, module.check_mode)
        changed = changed or bool(result["removed_releases"] or result["owner_fixed"])
    if module._diff:
        result["diff"] = dict(before=describe(before), after=describe(expected_after(before, report)),
                              before_header="%s before levelling" % node.node, after_header="%s after levelling" % node.node)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
