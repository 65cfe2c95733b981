#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: boot_server_slave
short_description: Manage the allow-list of a running Erlang boot server
version_added: 0.1.0
description:
  - Adds or removes IPv4 addresses on the allow-list of the C(erl_boot_server) running on O(node)
    (C(erl_boot_server:add_slave/1), C(delete_slave/1), C(which_slaves/0)).
  - The boot server serves code only to workers whose address is on this list; add a worker
    before starting it, and remove addresses of terminated workers (a recycled IP would be served).
  - The list lives in the boot server's memory only; keeping it across boot server restarts is the
    job of the boot server role (it persists the allowed addresses in a file).
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
        (stale addresses and subnets added by other means).
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
  skunkworks.erlang_ec2.boot_server_slave:
    node: boot@172.31.0.4
    addresses:
      - 172.31.0.5

- name: The allow-list is exactly the current workers
  skunkworks.erlang_ec2.boot_server_slave:
    node: "{{ erlang_boot_node }}"
    addresses: "{{ groups['erlang_workers'] | map('extract', hostvars, 'ec2_private_ip') | list }}"
    exclusive: true

- name: Remove a terminated worker
  skunkworks.erlang_ec2.boot_server_slave:
    node: boot@172.31.0.4
    addresses: [172.31.0.9]
    state: absent
"""

RETURN = r"""
slaves:
  description: The allow-list after the change (in check mode, as it would be), sorted.
    Subnets added with C(erl_boot_server:add_subnet/2) appear as C(address/prefix).
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
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.cluster import is_ipv4
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import (
    MUTUALLY_EXCLUSIVE,
    ErlangNodeError,
    argument_spec,
    ip_tuple,
    literal,
    module_node,
)

SINGLE_ADDRESS_MASK = (255, 255, 255, 255)

WHICH_SLAVES = "erl_boot_server:which_slaves()"

# Apply deletions then additions; every call's result comes back so a refusal is not lost.
CHANGE = (
    "SkwDeleted = [{SkwM, SkwA, erl_boot_server:delete_subnet(SkwM, SkwA)} || {SkwM, SkwA} <- %s], "
    "SkwAdded = [{SkwA, erl_boot_server:add_slave(SkwA)} || SkwA <- %s], "
    "{SkwDeleted, SkwAdded, erl_boot_server:which_slaves()}"
)


def ip_key(address):
    return tuple(int(part) for part in address.split("/")[0].split(".")) + (address,)


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
        module.fail_json(msg="no boot server runs on node %s (erl_boot_server is not started there)" % node.node, error=exc.to_dict())
    module.fail_json(msg=exc.message, error=exc.to_dict())


def main():
    spec = argument_spec()
    spec.update(
        addresses=dict(type="list", elements="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        exclusive=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, mutually_exclusive=MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    params = module.params
    if params["exclusive"] and params["state"] == "absent":
        module.fail_json(msg="exclusive=true needs state=present (it makes the list exactly the given addresses)")
    addresses = validate_addresses(module, params["addresses"])
    node = module_node(module)
    try:
        try:
            current = decode_slaves(node.call(WHICH_SLAVES))
        except ErlangNodeError as exc:
            boot_server_error(module, node, exc)
        to_add, to_remove = plan(current, addresses, params["state"], params["exclusive"])
        changed = bool(to_add or to_remove)
        before = sorted_entries(current)
        if not changed or module.check_mode:
            after = sorted_entries((set(current) | set(to_add)) - set(to_remove))
        else:
            remove_terms = [current[e] for e in to_remove]
            add_terms = [ip_tuple(a) for a in to_add]
            try:
                deleted, added, slaves = node.call(CHANGE % (literal(remove_terms), literal(add_terms)))
            except ErlangNodeError as exc:
                boot_server_error(module, node, exc)
            refused = [(address, status) for address, status in added if status != "ok"]
            refused += [(address, status) for mask, address, status in deleted if status != "ok"]
            after = sorted_entries(decode_slaves(slaves))
            if refused:
                module.fail_json(msg="the boot server refused: %r" % (refused,), slaves=after)
    finally:
        node.close()
    result = dict(changed=changed, slaves=after, added=to_add, removed=to_remove)
    if module._diff:
        result["diff"] = dict(
            before="".join(e + "\n" for e in before),
            after="".join(e + "\n" for e in after),
            before_header="%s allow-list" % params["node"],
            after_header="%s allow-list" % params["node"],
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
