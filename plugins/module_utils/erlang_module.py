# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base of every module that calls a running Erlang node (as amazon.aws's AnsibleAWSModule is for AWS).

API (every Erlang module is built on it: node_info, node_restart, boot_server_allow_list)::

    from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_module import ErlangNodeModule
    from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError

    def main():
        module = ErlangNodeModule(argument_spec=dict(addresses=dict(type="list", elements="str", required=True)),
                                  supports_check_mode=True)
        try:
            slaves = module.node.call("erl_boot_server:which_slaves()")
        except ErlangNodeError as exc:
            module.fail_json_node(exc)              # or fail_json_node(exc, msg="...", slaves=[...])
        module.exit_json(changed=False, slaves=slaves)

- ``ErlangNodeModule(argument_spec=None, mutually_exclusive=None, **kwargs)``: an AnsibleModule whose
  options are the module's own plus those of the doc fragment ``skunkworks.erlang_ec2.erlang_node``
  (node, cookie, cookie_file, timeout, erl_call; ``erlang_node.argument_spec()``), with cookie and
  cookie_file mutually exclusive besides the ``mutually_exclusive`` given. Other keyword arguments
  (supports_check_mode, required_if, ...) go to AnsibleModule unchanged. A module's own option
  may not reuse a fragment option's name.
- ``module.node``: the ``erlang_node.ErlangNode`` for those options, built on first use. A bad node
  name, cookie, timeout or erl_call fails the module there (``fail_json_node``).
- ``module.fail_json_node(exc, msg=None, **result)``: fail for an ``ErlangNodeError`` with the one
  error shape of these modules: ``msg`` (default: the error's message) and ``error`` (``{kind,
  message}``, see ``erlang_node.failure_result``), plus ``result``.
- ``exit_json`` and ``fail_json`` close the node first: its private HOME holds a copy of the cookie.
  ``module.close()`` does it earlier.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import (
    MUTUALLY_EXCLUSIVE,
    ErlangNodeError,
    argument_spec as node_argument_spec,
    failure_result,
    module_runner,
    node_from_params,
)


class ErlangNodeModule(AnsibleModule):
    """An AnsibleModule that calls one Erlang node; see the module docstring for the API."""

    def __init__(self, argument_spec=None, mutually_exclusive=None, **kwargs):
        spec = node_argument_spec()
        clash = sorted(set(spec) & set(argument_spec or {}))
        if clash:
            raise ValueError("options %s belong to the erlang_node doc fragment" % ", ".join(clash))
        spec.update(argument_spec or {})
        exclusive = list(MUTUALLY_EXCLUSIVE) + list(mutually_exclusive or [])
        # Before AnsibleModule.__init__, which may already fail (and so close).
        self._node = None
        super(ErlangNodeModule, self).__init__(argument_spec=spec, mutually_exclusive=exclusive, **kwargs)

    @property
    def node(self):
        if self._node is None:
            try:
                self._node = node_from_params(self.params, module_runner(self))
            except ErlangNodeError as exc:
                self.fail_json_node(exc)
        return self._node

    def fail_json_node(self, exc, msg=None, **result):
        """Fail for an ErlangNodeError: msg (default the error's message), error={kind, message}, result."""
        result.update(failure_result(exc, msg))
        self.fail_json(**result)

    def close(self):
        if self._node is not None:
            self._node.close()
            self._node = None

    def exit_json(self, **kwargs):
        self.close()
        super(ErlangNodeModule, self).exit_json(**kwargs)

    def fail_json(self, msg, **kwargs):
        self.close()
        super(ErlangNodeModule, self).fail_json(msg, **kwargs)
