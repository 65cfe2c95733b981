# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options of every module that calls a running Erlang node: erlang_node.argument_spec(), which
    # module_utils/erlang_module.py (ErlangNodeModule) folds into each module's own options.
    DOCUMENTATION = r"""
options:
  node:
    description:
      - The Erlang node to call, C(name@host), for example C(worker@172.31.0.5).
      - A host part with a dot (an IP address or a fully qualified name) is called with long names
        (C(erl_call -name)), one without a dot with short names (C(erl_call -sname)).
    type: str
    required: true
  cookie:
    description:
      - The cluster's Erlang cookie.
      - It is written to a private temporary C(.erlang.cookie) (directory mode 0700, file mode 0400) that C(erl_call)
        reads; it is never put on a command line, in a log or in the module's result.
      - Mutually exclusive with O(cookie_file).
    type: str
  cookie_file:
    description:
      - A file holding the cookie (its first line), read on the host the module runs on.
      - Defaults to C(~/.erlang.cookie) of the user running the module when O(cookie) is not set.
      - Mutually exclusive with O(cookie).
    type: path
  timeout:
    description:
      - Seconds allowed for each call to a node (C(erl_call -timeout)).
    type: int
    default: 10
  erl_call:
    description:
      - Path of the C(erl_call) program. Defaults to the one found on E(PATH) (C(/usr/bin/erl_call) from the Debian package C(erlang-base)).
    type: path
  distribution:
    description:
      - The cluster's distribution protocol (role variable C(erlang_distribution)).
      - V(tcp) calls the node with C(erl_call).
      - V(tls) (C(inet_tls_dist)) starts a hidden C(erl) node with O(ssl_dist_optfile), which evaluates the same
        expression on the node over C(erpc) (C(erl_call) cannot speak TLS distribution). One such node serves
        every call of the module run and stops with it, so only the first call pays its start (about 0.3 s;
        later calls about 1 ms). It needs C(erl) and the OTP C(ssl) application (Debian C(erlang-ssl)) where
        the module runs. See docs/tls.md.
    type: str
    choices: [tcp, tls]
    default: tcp
  ssl_dist_optfile:
    description:
      - With O(distribution=tls), the C(-ssl_dist_optfile) whose certificate and key the module presents, read on
        the host the module runs on. Defaults to C(/etc/erlang-ec2/tls/ssl_dist.conf), the node's own, written by
        the C(erlang) role (readable by root).
    type: path
notes:
  - The module calls the node with C(erl_call) from the host it runs on, which must reach the node's epmd (TCP 4369)
    and distribution port.
  - C(erl_call) cannot use TLS distribution (C(-proto_dist inet_tls)); with O(distribution=tls) the module uses a
    hidden C(erl) node instead (about 0.3 s more per call).
requirements:
  - C(erl_call) (Erlang/OTP C(erl_interface); Debian package C(erlang-base)).
"""

    # The attributes of a module that only reads a node (node_info, cluster_status).
    READ_ONLY = r"""
attributes:
  check_mode:
    support: full
    description: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
"""
