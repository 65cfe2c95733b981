"""Plain pytest (outside ansible-test): the collection loader goes in before any test file imports the
collection, so every file sees the same ansible_collections package whatever order they run in."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    from ansible.plugins.loader import init_plugin_loader
    from ansible.utils.collection_loader import AnsibleCollectionConfig
except ImportError:  # ansible-test units runs module tests without the controller code, its loader set up
    AnsibleCollectionConfig = None

if AnsibleCollectionConfig is not None and AnsibleCollectionConfig.collection_finder is None:
    init_plugin_loader()
