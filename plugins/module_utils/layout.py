# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host layout: every path, unit name and the service user of a node, defined here only.

Roles and playbooks read it as ``erlang_layout`` (the ``host_layout`` lookup), modules and tests
import it. Four roots can be moved (``ROOTS``); every other entry is derived from them, so
overriding ``erlang_home`` moves the cookie and the allow-list files with it (docs/design.md).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import posixpath

# Root name -> (Ansible variable that overrides it, default).
ROOTS = {
    "home": ("erlang_home", "/var/lib/erlang-ec2"),
    "release_root": ("erlang_release_root", "/srv/erlang-ec2"),
    "user": ("erlang_user", "erlang"),
    "group": ("erlang_group", "erlang"),
}

CONFIG_DIR = "/etc/erlang-ec2"
HELPERS_DIR = "/usr/local/lib/erlang-ec2"
COMMAND_DIR = "/usr/local/bin"
# Debian's OTP (the erlang role installs it from Debian's packages).
OTP_ROOT = "/usr/lib/erlang"

UNITS = {
    "worker_unit": "erlang-worker",
    "boot_server_unit": "erlang-boot-server",
    "bootstrap_unit": "erlang-ec2-bootstrap",
}


def default_roots():
    """The roots as shipped: {name: value}."""
    return dict((name, default) for name, (_var, default) in ROOTS.items())


def host_layout(**roots):
    """Every path and name of a node, from the roots given (None or absent: the default)."""
    unknown = sorted(set(roots) - set(ROOTS))
    if unknown:
        raise ValueError("unknown layout root(s): %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(ROOTS))))
    values = default_roots()
    values.update((name, value) for name, value in roots.items() if value not in (None, ""))
    for name in ("home", "release_root"):
        given = values[name]
        values[name] = posixpath.normpath(given) if isinstance(given, str) else given
        if not isinstance(given, str) or not posixpath.isabs(given) or values[name] in ("/", "//"):
            raise ValueError("layout root %s must be an absolute path other than /, got %r" % (name, given))
    return _derive(values)


def _derive(roots):
    home, release_root = roots["home"], roots["release_root"]
    helpers_bin = posixpath.join(HELPERS_DIR, "bin")
    layout = dict(roots)
    layout.update(UNITS)
    layout.update({
        "cookie_file": posixpath.join(home, ".erlang.cookie"),
        # The boot server's allow-list, persisted by the boot server itself (erlang_ec2_boot_server).
        "allow_list_file": posixpath.join(home, "boot_server_slaves"),
        # The rollouts the boot server has seen (rolling restart, push, rollback), one JSON object a line.
        "rollout_log": posixpath.join(home, "rollouts.jsonl"),
        # The cluster's other boot servers (Erlang node names, one a line): the peers a boot server levels from.
        "boot_server_peers_file": posixpath.join(home, "boot_server_peers"),
        "releases_dir": posixpath.join(release_root, "releases"),
        "current_link": posixpath.join(release_root, "current"),
        "previous_link": posixpath.join(release_root, "previous"),
        "config_dir": CONFIG_DIR,
        "worker_args_file": posixpath.join(CONFIG_DIR, "worker.args"),
        "worker_env_file": posixpath.join(CONFIG_DIR, "worker.env"),
        "helpers_dir": HELPERS_DIR,
        "helpers_bin_dir": helpers_bin,
        "ebin_dir": posixpath.join(HELPERS_DIR, "ebin"),
        "src_dir": posixpath.join(HELPERS_DIR, "src"),
        "wait_node_script": posixpath.join(helpers_bin, "erlang-ec2-wait-node"),
        "local_files_script": posixpath.join(helpers_bin, "erlang-ec2-local-files"),
        "bootstrap_script": posixpath.join(helpers_bin, "erlang-ec2-bootstrap"),
        "node_command": posixpath.join(COMMAND_DIR, "erlang-ec2-node"),
        "otp_root": OTP_ROOT,
        "otp_lib_dir": posixpath.join(OTP_ROOT, "lib"),
    })
    layout["joined_allow_list_file"] = layout["allow_list_file"] + ".joined"
    return layout


DEFAULT_LAYOUT = host_layout()
