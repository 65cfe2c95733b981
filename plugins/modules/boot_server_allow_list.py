#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: boot_server_allow_list
short_description: Manage the allow-list of a running Erlang boot server
version_added: 0.1.0
description:
  - Adds or removes IPv4 addresses on the allow-list of the boot server running on O(node).
  - The boot server serves code only to workers whose address is on this list; add a worker
    before starting it, and remove addresses of terminated workers (a recycled IP would be served).
  - On a boot server of the C(boot_server) role (C(erlang_ec2_boot_server) runs there), every change goes
    through the boot server itself, which also persists the list in its file (C(erlang_layout.allow_list_file))
    atomically; it is the one writer of that file, so the module never writes it.
    A restarted boot server allows exactly the persisted list. RV(persisted) says so.
  - On any other C(erl_boot_server) the list is changed in memory only (OTP's C(add_slave/1),
    C(delete_slave/1)); RV(persisted) is then V(false).
  - Renamed from C(boot_server_slave) (OTP's word), which still works as a deprecated redirect.
author:
  - Skunkworks developers (@skunkworks)
extends_documentation_fragment:
  - skunkworks.erlang_ec2.erlang_node
options:
  addresses:
    description:
      - Dotted-quad IPv4 addresses of workers, for example C(172.31.0.5).
      - Host names and IPv6 addresses are refused (the diskless loader silently ignores them) and nothing is changed.
    type: list
    elements: str
    required: true
  state:
    description:
      - V(present) puts the addresses on the list, V(absent) takes them off.
    type: str
    choices: [present, absent]
    default: present
  exclusive:
    description:
      - With O(state=present), make the list exactly O(addresses), removing every other entry
        (stale addresses and subnets added by other means), in one call to the boot server.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads the list and reports what would change without changing it.
  diff_mode:
    support: full
    description: Shows the allow-list before and after, one entry a line.
"""

EXAMPLES = r"""
- name: Allow a new worker to boot before starting it
  skunkworks.erlang_ec2.boot_server_allow_list:
    node: boot@172.31.0.4
    addresses:
      - 172.31.0.5

- name: The allow-list is exactly the current workers
  skunkworks.erlang_ec2.boot_server_allow_list:
    node: "{{ erlang_boot_node }}"
    addresses: "{{ groups['erlang_workers'] | map('extract', hostvars, 'ec2_private_ip') | list }}"
    exclusive: true

- name: Remove a terminated worker
  skunkworks.erlang_ec2.boot_server_allow_list:
    node: boot@172.31.0.4
    addresses: [172.31.0.9]
    state: absent
"""

RETURN = r"""
allow_list:
  description: The allow-list after the change (in check mode, as it would be), sorted.
    Subnets added with C(erl_boot_server:add_subnet/2) appear as C(address/prefix).
  returned: success
  type: list
  elements: str
  sample: ["172.31.0.5", "172.31.0.6"]
slaves:
  description: Deprecated alias of RV(allow_list) (OTP's word), kept for existing playbooks.
  returned: success
  type: list
  elements: str
  sample: ["172.31.0.5", "172.31.0.6"]
added:
  description: Addresses put on the list.
  returned: success
  type: list
  elements: str
  sample: ["172.31.0.6"]
removed:
  description: Entries taken off the list.
  returned: success
  type: list
  elements: str
  sample: ["172.31.0.9"]
persisted:
  description: Whether the boot server persists its list (C(erlang_ec2_boot_server) runs on O(node)).
    Changes on a boot server that does not are lost at its next restart.
  returned: success
  type: bool
  sample: true
"""

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.cluster import ipv4_sort_key, is_ipv4
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_module import ErlangNodeModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError, ip_tuple
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_terms import literal

SINGLE_ADDRESS_MASK = (255, 255, 255, 255)

# The boot server's allow-list (OTP's name for it: slaves), and whether erlang_ec2_boot_server,
# the owner of the persisted file, runs there.
WHICH = "{erl_boot_server:which_slaves(), is_pid(erlang:whereis(erlang_ec2_boot_server))}"

# Through the owner: it changes the running list and persists the file, one call per change
# (set_slaves/1: exactly these). Every call's result comes back so a refusal is not lost.
CHANGE_PERSISTED = {
    "exclusive": "SkwDone = [{set, erlang_ec2_boot_server:set_slaves(%(wanted)s)}], ",
    "present": "SkwDone = [{SkwA, erlang_ec2_boot_server:add_slave(SkwA)} || SkwA <- %(add)s], ",
    "absent": "SkwDone = [{SkwA, erlang_ec2_boot_server:delete_slave(SkwA)} || {_, SkwA} <- %(remove)s], ",
}
# A plain erl_boot_server: deletions then additions, in memory only.
CHANGE_MEMORY = (
    "SkwDone = [{SkwA, erl_boot_server:delete_subnet(SkwM, SkwA)} || {SkwM, SkwA} <- %(remove)s]"
    " ++ [{SkwA, erl_boot_server:add_slave(SkwA)} || SkwA <- %(add)s], "
)
RESULT = "{SkwDone, erl_boot_server:which_slaves()}"


def ip_key(address):
    """An entry (an address, or address/prefix) in the order of its address (cluster.py's), then its text."""
    return ipv4_sort_key(address.split("/")[0]) + (address,)


def mask_prefix(mask):
    bits = "".join(format(octet, "08b") for octet in mask)
    return bits.count("1")


def entry_text(mask, address):
    text = ".".join(str(octet) for octet in address)
    if tuple(mask) == SINGLE_ADDRESS_MASK:
        return text
    return "%s/%d" % (text, mask_prefix(mask))


def decode_slaves(term):
    """[{Mask, IP}] -> {text: (mask, ip)}."""
    entries = {}
    for mask, address in term:
        entries[entry_text(mask, address)] = (tuple(mask), tuple(address))
    return entries


def sorted_entries(entries):
    return sorted(entries, key=ip_key)


def plan(current, addresses, state, exclusive):
    """(to_add, to_remove) as lists of entry texts."""
    wanted = set(addresses)
    if state == "present":
        to_add = [a for a in addresses if a not in current]
        to_remove = [e for e in current if e not in wanted] if exclusive else []
    else:
        to_add = []
        to_remove = [a for a in addresses if a in current]
    return sorted_entries(set(to_add)), sorted_entries(set(to_remove))


def validate_addresses(module, addresses):
    bad = [a for a in addresses if not is_ipv4(a)]
    if bad:
        module.fail_json(
            msg="addresses must be dotted-quad IPv4 addresses (the diskless loader silently ignores host names "
            "and IPv6, so such a worker would hang); not valid: %s. Nothing was changed." % ", ".join(repr(b) for b in bad),
            invalid_addresses=bad,
        )
    # "010.0.0.1" would be read as 10.0.0.1: keep one spelling per address.
    return [".".join(str(int(p)) for p in a.split(".")) for a in addresses]


def boot_server_error(module, node, exc):
    if exc.details and "noproc" in repr(exc.details[1]):
        module.fail_json_node(exc, msg="no boot server runs on node %s (erl_boot_server is not started there)" % node.node)
    module.fail_json_node(exc)


def change_expression(persisted, params, addresses, to_add, remove_terms):
    """The one erl_call expression that applies the change and reads the list back."""
    values = dict(add=literal([ip_tuple(a) for a in to_add]), remove=literal(remove_terms),
                  wanted=literal([ip_tuple(a) for a in addresses]))
    if not persisted:
        return (CHANGE_MEMORY % values) + RESULT
    kind = "exclusive" if params["exclusive"] else params["state"]
    return (CHANGE_PERSISTED[kind] % values) + RESULT


def apply_change(module, node, persisted, addresses, current, to_add, to_remove):
    """Changes the list; returns it as read back. Fails on any refusal (or a change not persisted)."""
    expression = change_expression(persisted, module.params, addresses, to_add, [current[e] for e in to_remove])
    try:
        done, entries = node.call(expression)
    except ErlangNodeError as exc:
        boot_server_error(module, node, exc)
    after = sorted_entries(decode_slaves(entries))
    refused = [(what, status) for what, status in done if status != "ok"]
    if refused:
        module.fail_json(msg="the boot server refused or could not persist: %r" % (refused,), allow_list=after,
                         slaves=after, persisted=persisted)
    return after


def run(module, node, addresses):
    """(result, before): the change planned against the list read, applied unless check mode."""
    params = module.params
    try:
        which, persisted = node.call(WHICH)
        current = decode_slaves(which)
    except ErlangNodeError as exc:
        boot_server_error(module, node, exc)
    to_add, to_remove = plan(current, addresses, params["state"], params["exclusive"])
    changed = bool(to_add or to_remove)
    if not changed or module.check_mode:
        after = sorted_entries((set(current) | set(to_add)) - set(to_remove))
    else:
        after = apply_change(module, node, persisted, addresses, current, to_add, to_remove)
    result = dict(changed=changed, allow_list=after, slaves=after, added=to_add, removed=to_remove,
                  persisted=bool(persisted))
    return result, sorted_entries(current)


def main():
    module = ErlangNodeModule(
        argument_spec=dict(
            addresses=dict(type="list", elements="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            exclusive=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["exclusive"] and params["state"] == "absent":
        module.fail_json(msg="exclusive=true needs state=present (it makes the list exactly the given addresses)")
    addresses = validate_addresses(module, params["addresses"])
    result, before = run(module, module.node, addresses)
    if module._diff:
        result["diff"] = dict(
            before="".join(e + "\n" for e in before),
            after="".join(e + "\n" for e in result["allow_list"]),
            before_header="%s allow-list" % params["node"],
            after_header="%s allow-list" % params["node"],
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
