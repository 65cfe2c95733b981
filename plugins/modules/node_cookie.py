#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: node_cookie
short_description: Give a running Erlang node a new cookie without restarting it
version_added: 1.1.0
description:
  - "Moves a running node to O(new_cookie) in memory (C(erlang:set_cookie/1)) and rewrites its cookie file
    atomically (temporary file and rename, mode 0400), so that later starts use the new cookie too. Connections
    that exist stay up: Erlang checks the cookie only when a connection is set up."
  - The node is reached with the cookie it uses now (O(cookie), O(cookie_file), else the file at O(path)) or, when
    it already answers to it, with O(new_cookie); a node already on the new cookie with its file up to date is
    not changed.
  - "With O(step=switched) (during a rotation) the node keeps the old cookie for each of O(peers) that is not on the
    new one yet (a per-node cookie, C(erlang:set_cookie/2)), and tells the peers already on the new cookie to use the
    new one for it: nodes switched and nodes not yet switched can still open connections to each other. With
    O(step=final) (once every node is switched) those per-node cookies are removed."
  - After the change the module connects again with O(new_cookie) and reports whether the node answers to it
    (RV(answers_new_cookie)).
  - "A node that is not running is not a failure: only its file is rewritten (its next start uses the new cookie),
    and RV(running=false). A node that answers neither cookie is a failure."
  - The cookies are never on a command line, in a log or in the result (both are masked in the output).
author:
  - Skunkworks developers (@skunkworks)
extends_documentation_fragment:
  - skunkworks.erlang_ec2.erlang_node
options:
  new_cookie:
    description:
      - The cookie the node moves to; 1-255 printable ASCII characters without spaces.
    type: str
    required: true
  path:
    description:
      - The node's cookie file, rewritten to hold exactly O(new_cookie) (no newline), mode 0400.
      - Not given, the file is left alone (memory only).
      - Also where the current cookie is read from when neither O(cookie) nor O(cookie_file) is given.
    type: path
  owner:
    description:
      - Owner of the rewritten file (the node's service user). Default the current file's owner.
    type: str
  group:
    description:
      - Group of the rewritten file. Default the current file's group.
    type: str
  peers:
    description:
      - The other nodes of the cluster (C(name@host)). With O(step=switched), those not on the new cookie yet keep
        the old one for this node; with O(step=final), their per-node cookies are removed.
    type: list
    elements: str
    default: []
  step:
    description:
      - V(switched) during a rotation (node by node); V(final) once every node is on the new cookie.
    type: str
    choices: [switched, final]
    default: switched
attributes:
  check_mode:
    support: full
    description: Reads the node's state and the file and reports what would change, changing nothing.
  diff_mode:
    support: full
    description: Shows which cookie (old or new, never the value) the node and the file use before and after.
notes:
  - The module runs on the node's own host (it reads and writes the cookie file there), as root or the service user.
"""

EXAMPLES = r"""
# During a rotation, one node at a time (the rotate_cookie playbook does this for every node of a cluster).
- name: Move the node to the new cookie, keeping the old one for peers not moved yet
  skunkworks.erlang_ec2.node_cookie:
    node: "{{ erlang_node }}"
    new_cookie: "{{ new_cookie }}"
    path: "{{ lookup('skunkworks.erlang_ec2.host_layout').cookie_file }}"
    owner: erlang
    group: erlang
    peers: "{{ groups['erlang_cluster_demo'] | map('extract', hostvars, 'erlang_node') | reject('eq', erlang_node) | list }}"
  become: true
  no_log: true

# Once every node is on the new cookie.
- name: Drop the per-node cookies
  skunkworks.erlang_ec2.node_cookie:
    node: "{{ erlang_node }}"
    new_cookie: "{{ new_cookie }}"
    path: "{{ lookup('skunkworks.erlang_ec2.host_layout').cookie_file }}"
    peers: "{{ groups['erlang_cluster_demo'] | map('extract', hostvars, 'erlang_node') | reject('eq', erlang_node) | list }}"
    step: final
  become: true
  no_log: true
"""

RETURN = r"""
running:
  description: Whether the node answered (false - not running or unreachable - only the file was handled).
  returned: always
  type: bool
  sample: true
reason:
  description: Why the node did not answer.
  returned: when RV(running=false)
  type: str
  sample: "node worker@172.31.0.5 is not running: epmd on 172.31.0.5 has no node named 'worker'"
reached_with:
  description: Which cookie reached the node, C(old) or C(new).
  returned: when RV(running=true)
  type: str
  sample: old
answers_new_cookie:
  description: Whether a new connection made with O(new_cookie) after the change is accepted (in check mode, whether it is now).
  returned: when RV(running=true)
  type: bool
  sample: true
switched:
  description: Whether the node's own cookie was changed to O(new_cookie) by this run (would be, in check mode).
  returned: when RV(running=true)
  type: bool
  sample: true
pinned_old:
  description: Peers for which the node keeps the old cookie (not on the new one when it switched).
  returned: when RV(running=true)
  type: list
  elements: str
  sample: ["worker@172.31.0.6"]
peers_told:
  description: Peers already on the new cookie that were told to use it for this node.
  returned: when RV(running=true)
  type: list
  elements: str
  sample: ["boot@172.31.0.4"]
pins_repaired:
  description: Peers on the new cookie for which this (already switched) node still kept the old one; now the new one.
  returned: when RV(running=true)
  type: list
  elements: str
  sample: []
pins_removed:
  description: Peers whose per-node cookie was removed (O(step=final)).
  returned: when RV(running=true)
  type: list
  elements: str
  sample: ["worker@172.31.0.6"]
pins:
  description: Peers that still have a per-node cookie on the node after the run.
  returned: when RV(running=true)
  type: list
  elements: str
  sample: []
peers_on_new_cookie:
  description: Connected peers that use the new cookie as their own.
  returned: when RV(running=true)
  type: list
  elements: str
  sample: ["boot@172.31.0.4"]
peers_not_on_new_cookie:
  description: Peers that do not (or are not connected to the node).
  returned: when RV(running=true)
  type: list
  elements: str
  sample: ["worker@172.31.0.6"]
file_changed:
  description: Whether the cookie file was rewritten (content, owner or mode; would be, in check mode).
  returned: always
  type: bool
  sample: true
"""

import grp
import os
import pwd

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_cookie
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_module import ErlangNodeModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import (
    KIND_AUTH,
    UNAVAILABLE_KINDS,
    ErlangNode,
    ErlangNodeError,
    check_cookie,
    default_cookie_file,
    find_erl_call,
    module_runner,
    read_cookie_file,
)


def old_cookie(module):
    """The cookie the node uses now: cookie, cookie_file, else the file at path, else ~/.erlang.cookie."""
    params = module.params
    if params["cookie"] is not None:
        return check_cookie(params["cookie"])
    return read_cookie_file(params["cookie_file"] or params["path"] or default_cookie_file())


def call_with(module, cookie, expression):
    params = module.params
    node = ErlangNode(params["node"], module_runner(module), cookie=cookie, timeout=params["timeout"], erl_call=params["erl_call"],
                      distribution=params["distribution"], ssl_dist_optfile=params["ssl_dist_optfile"])
    try:
        return node.call(expression)
    finally:
        node.close()


def reach(module, cookies, expression):
    """Evaluate expression with the first cookie the node accepts: (label, answer). Raises the last error."""
    labels = erlang_cookie.attempt_order(module.params["step"], cookies["old"] == cookies["new"])
    for label in labels:
        try:
            return label, call_with(module, cookies[label], expression)
        except ErlangNodeError as exc:
            if exc.kind != KIND_AUTH:
                raise
    raise ErlangNodeError(KIND_AUTH, "node %s refused %s: it runs with another cookie" % (
        module.params["node"], "both the current cookie (from its file or the cookie option) and the new one" if len(labels) > 1
        else "the new cookie, which its cookie file already holds"))


def owner_ids(module, path):
    """uid, gid for the rewritten file: the options, else the current file's, else the running user's."""
    params = module.params
    try:
        info = os.stat(path)
        uid, gid = info.st_uid, info.st_gid
    except OSError:
        uid, gid = os.getuid(), os.getgid()
    try:
        if params["owner"]:
            uid = pwd.getpwnam(params["owner"]).pw_uid
        if params["group"]:
            gid = grp.getgrnam(params["group"]).gr_gid
    except KeyError as exc:
        module.fail_json(msg="unknown owner or group for %s: %s" % (path, exc))
    return uid, gid


def handle_file(module, new):
    """Rewrite the cookie file when it differs (not in check mode): (changed, before-label)."""
    path = module.params["path"]
    if not path:
        return False, None
    uid, gid = owner_ids(module, path)
    try:
        state = erlang_cookie.file_state(path, new, uid, gid)
        if erlang_cookie.file_up_to_date(state):
            return False, "new"
        if not module.check_mode:
            erlang_cookie.write_atomically(path, new, uid, gid)
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot rewrite the cookie file %s: %s" % (path, exc.strerror or exc))
    return True, ("new" if state["content"] else ("old" if state["exists"] else "absent"))


def verify(module, new):
    """A fresh connection with the new cookie: accepted or not."""
    try:
        return call_with(module, new, "node()") is not None
    except ErlangNodeError as exc:
        if exc.kind == KIND_AUTH or exc.kind in UNAVAILABLE_KINDS:
            return False
        raise


def main():
    module = ErlangNodeModule(
        argument_spec=dict(
            new_cookie=dict(type="str", required=True, no_log=True),
            path=dict(type="path"),
            owner=dict(type="str"),
            group=dict(type="str"),
            peers=dict(type="list", elements="str", default=[]),
            step=dict(type="str", choices=list(erlang_cookie.STEPS), default=erlang_cookie.STEP_SWITCHED),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        new = check_cookie(params["new_cookie"])
    except ErlangNodeError as exc:
        module.fail_json_node(exc, msg="new_cookie: %s" % exc.message)
    try:
        old = old_cookie(module)
        find_erl_call(params["erl_call"])
    except ErlangNodeError as exc:
        module.fail_json_node(exc)
    expression = erlang_cookie.switch_expression(new, params["peers"], params["step"], module.check_mode)
    module.no_log_values.add(old)  # read from a file, not an option: mask it in the output too
    try:
        label, answer = reach(module, {"old": old, "new": new}, expression)
    except ErlangNodeError as exc:
        if exc.kind not in UNAVAILABLE_KINDS:
            module.fail_json_node(exc)
        file_changed, dummy = handle_file(module, new)
        module.exit_json(changed=file_changed, running=False, reason=exc.message, file_changed=file_changed)
    result = erlang_cookie.interpret(answer, params["step"], module.check_mode)
    file_changed, file_before = handle_file(module, new)
    answers = not result["switched"] if module.check_mode else verify(module, new)
    result.update(changed=result["changed"] or file_changed, running=True, reached_with=label, answers_new_cookie=answers,
                  file_changed=file_changed)
    if module._diff:
        result["diff"] = dict(
            before="node: %s cookie\nfile: %s cookie\n" % ("new" if not result["switched"] else "old", file_before or "-"),
            after="node: new cookie\nfile: %s cookie\n" % ("new" if params["path"] else "-"),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
