#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: release_info
short_description: Read an Erlang/Elixir release (rebar3/relx or mix) and what it needs on a diskless node
version_added: 0.2.0
description:
  - Reads a release tarball (C(rebar3 tar), C(mix release) with the C(:tar) step) or a directory of that shape,
    with no Erlang VM, and returns its name, version, ERTS, applications, the applications it bundles in C(lib/),
    and what a diskless node needs from it on local disk (priv trees, C(vm.args)).
  - The release's C(releases/<vsn>/vm.args) is returned filtered, without the flags the collection sets itself
    on every node (C(-name), C(-sname), C(-setcookie), C(-boot), C(-boot_var), C(-mode), C(-loader), C(-hosts),
    C(-config), C(-args_file)). Each dropped flag is named in a warning; a dropped flag's value (for example the
    release's own cookie) is never returned.
  - Fails, with nothing written outside O(unpack_dir), on a release the collection cannot run. Not exactly one
    C(releases/<vsn>/<name>.rel) (relx's and mix's C(start.rel), C(start_clean.rel) aside), a C(.rel) that cannot
    be read, a version that differs from its C(releases/<vsn>) directory, relx C(vm.args.src)/C(sys.config.src)
    (OS-variable substitution is done by the release's start script, which diskless workers do not run), and an
    Elixir C(sys.config) that runs config providers (C(config/runtime.exs)).
  - Runs where the release is, normally the controller (delegated to C(localhost)).
author:
  - Skunkworks developers (@skunkworks)
options:
  src:
    description:
      - The release, a tarball (C(.tar.gz), C(.tgz), C(.tar)) or a directory holding C(lib/) and C(releases/).
    type: path
    required: true
  unpack_dir:
    description:
      - A directory to unpack a tarball into (the returned RV(release_dir)), created if missing; the caller removes it.
      - Required when O(src) is a tarball, ignored for a directory.
    type: path
attributes:
  check_mode:
    support: full
    description: Reads only (a tarball is still unpacked into O(unpack_dir), scratch space of the caller).
  diff_mode:
    support: none
    description: Reads only.
"""

EXAMPLES = r"""
- name: Read the release on the controller
  skunkworks.erlang_ec2.release_info:
    src: /tmp/dist/hello_rebar3-2.0.0.tar.gz
    unpack_dir: "{{ scratch.path }}"
  delegate_to: localhost
  register: release

- name: Refuse a release built for another ERTS
  ansible.builtin.assert:
    that: release.erts == erlang_erts_version
"""

RETURN = r"""
name:
  description: Release name.
  returned: success
  type: str
  sample: hello_rebar3
version:
  description: Release version (also its C(releases/<vsn>) directory).
  returned: success
  type: str
  sample: 2.0.0
erts:
  description: The ERTS version the C(.rel) names.
  returned: success
  type: str
  sample: 13.1.5
applications:
  description: Every application of the C(.rel) with its version.
  returned: success
  type: dict
  sample: {"kernel": "8.5.3", "crypto": "5.1.4", "hello_rebar3": "2.0.0"}
bundled:
  description: The C(<app>-<vsn>) directories in the release's C(lib/) (with an C(ebin/)).
  returned: success
  type: list
  elements: str
  sample: ["crypto-5.1.4", "hello_rebar3-2.0.0", "kernel-8.5.3"]
priv:
  description: The bundled applications that have a C(priv/) directory (read from local disk by nodes).
  returned: success
  type: list
  elements: str
  sample: ["crypto-5.1.4", "hello_rebar3-2.0.0"]
release_dir:
  description: The directory holding the release (O(src), or O(unpack_dir) for a tarball).
  returned: success
  type: str
rel_file:
  description: Path of the C(.rel).
  returned: success
  type: str
  sample: /tmp/x/releases/2.0.0/hello_rebar3.rel
sys_config:
  description: Path of C(releases/<vsn>/sys.config), empty when the release has none.
  returned: success
  type: str
vm_args:
  description: The release's C(vm.args) as the nodes use it.
  returned: success
  type: dict
  contains:
    source:
      description: Path of the release's C(vm.args), empty when it has none.
      type: str
    content:
      description: Its flags without those the collection owns, one flag a line, comments removed.
      type: str
      sample: "+S 1:1\n+A 8\n-kernel net_setuptime 11\n"
    dropped:
      description: The owned flags that were removed (names only).
      type: list
      elements: str
      sample: ["-setcookie", "-sname"]
consolidated:
  description: Path of an Elixir release's C(releases/<vsn>/consolidated) protocols, empty when absent.
  returned: success
  type: str
erts_included:
  description: The version of a bundled C(erts-<vsn>) directory (C(include_erts)), empty when none.
  returned: success
  type: str
  sample: ""
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.release import (
    TARBALL_RE,
    ReleaseError,
    inspect,
    unpack,
)


def read(src, unpack_dir):
    if os.path.isdir(src):
        return inspect(src)
    if not os.path.isfile(src) or not TARBALL_RE.match(src):
        raise ReleaseError("%s is neither a release directory (lib/, releases/<vsn>/<name>.rel) nor a tarball of one "
                           "(.tar.gz, .tgz or .tar, as `rebar3 tar` and `mix release` make)" % src)
    if not unpack_dir:
        raise ReleaseError("unpack_dir must name a directory to unpack the tarball %s into" % src)
    try:
        os.makedirs(unpack_dir, exist_ok=True)
    except OSError as exc:
        raise ReleaseError("cannot create %s: %s" % (unpack_dir, exc))
    unpack(src, unpack_dir)
    return inspect(unpack_dir)


def main():
    module = AnsibleModule(
        argument_spec=dict(src=dict(type="path", required=True), unpack_dir=dict(type="path")),
        supports_check_mode=True,
    )
    try:
        info = read(module.params["src"], module.params["unpack_dir"])
    except ReleaseError as exc:
        module.fail_json(msg="Refusing release %s: %s" % (module.params["src"], exc))
    if info["vm_args"]["dropped"]:
        module.warn("release %s %s: vm.args flags %s are set by the collection on every node and were dropped from "
                    "the release's vm.args (the cluster's cookie comes from its cookie file)"
                    % (info["name"], info["version"], ", ".join(info["vm_args"]["dropped"])))
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
