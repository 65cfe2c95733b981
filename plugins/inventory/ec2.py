# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: ec2
short_description: EC2 inventory of Erlang clusters (boot servers and workers)
version_added: 0.1.0
description:
  - Builds an inventory of every Erlang cluster node running on Amazon EC2, from the instance tags
    C(erlang-cluster) (cluster name) and C(erlang-role) (V(boot_server) or V(worker)) that
    M(skunkworks.erlang_ec2.cluster_instances) sets.
  - Groups hosts into C(erlang_boot_servers), C(erlang_workers) and one C(erlang_cluster_<name>) group per
    cluster (name sanitized, non C([A-Za-z0-9_]) characters become C(_)).
  - The inventory hostname of a host is its EC2 instance id (unique across regions and stable for the life of
    the instance) unless O(hostnames) says otherwise; C(ansible_host) is the address chosen by
    O(ansible_host_source) in either case.
  - "Host variables: C(erlang_cluster), C(erlang_role), C(erlang_node) (C(<node name>@<private IP>)),
    C(erlang_boot_server_ips), C(erlang_boot_nodes) and C(erlang_boot_server_hosts) (every boot server of the
    cluster, on every host of the cluster, boot servers included: their private IPs, their Erlang nodes and their
    inventory hostnames as O(hostnames) named them, for C(delegate_to) and C(hostvars); three lists in the same
    order, sorted by private IP numerically, so 172.31.0.9 comes before 172.31.0.10),
    C(erlang_boot_server_ip), C(erlang_boot_node) and C(erlang_boot_server_host) (the first of each list, kept for
    plays written for one boot server; null, and no C(erlang_boot_server_host), when the cluster has no sound
    boot server, the lists then empty),
    C(erlang_join) (on workers, how they join: the C(erlang-join) tag, V(push) when absent; null on a boot server),
    C(ec2_instance_id), C(ec2_region), C(ec2_private_ip), C(ec2_state), C(ec2_instance_type),
    C(ec2_availability_zone), C(ec2_tags) (a dict) and C(ansible_host) (see O(hostvars_prefix) for renaming
    the C(ec2_*) ones)."
  - "A cluster may have several boot servers. A cluster with no boot server, or with a boot server that has no
    private IP address, is reported with a warning, and every host of that cluster gets C(erlang_cluster_problem)
    (for example C(no boot server) or C(boot server i-0b has no private IP address)) with empty boot server lists,
    C(erlang_boot_server_ip) and C(erlang_boot_node) set to null and no C(erlang_boot_server_host). Hosts of a
    sound cluster have no C(erlang_cluster_problem)."
  - Instances are found with server-side filters (C(tag:erlang-cluster), C(tag:erlang-role),
    C(instance-state-name)); all regions (and all the queries of O(include_filters) and O(exclude_filters))
    are scanned concurrently. Only the few fields listed above are kept.
  - The inventory file is a YAML configuration file named C(erlang_ec2.yml), C(erlang_ec2.yaml), or ending in
    C(.erlang_ec2.yml) or C(.erlang_ec2.yaml), for example C(prod.erlang_ec2.yml).
  - With O(cache) on, a cache hit makes no AWS request at all (no STS, no DescribeRegions) and does not import
    boto3. The cache key covers the credentials' identity (profile, access key id, O(assume_role_arn)), the
    endpoint, the regions, O(clusters), O(instance_states), O(filters), O(include_filters), O(exclude_filters)
    and O(skip_disabled_regions); changing any of them misses the cache. The other options (O(hostnames),
    O(hostvars_prefix), O(ansible_host_source), constructed options, ...) only shape the output and are
    applied to cached answers too.
requirements:
  - boto3 >= 1.34.0
  - botocore >= 1.34.0
# Not amazon.aws.boto3: that fragment imports boto3 (about 0.15 s) on every run, cache hits included;
# it only adds the requirements above.
extends_documentation_fragment:
  - inventory_cache
  - constructed
  - amazon.aws.common.plugins
  - amazon.aws.region.plugins
  - amazon.aws.assume_role.plugins
notes:
  - A region that cannot be described (an unreachable endpoint, throttling that outlasts O(retries), any
    error but those O(skip_disabled_regions) skips) fails the whole source unless O(allow_partial_regions=true),
    in which case it is named in a warning and the inventory is not cached. Ansible reports a failed source as a warning and goes on
    with the other sources; set C(ANSIBLE_INVENTORY_UNPARSED_FAILED=true) (as AWX does) to make it fatal.
  - If no credentials are provided and the control node has an associated IAM instance profile then the role
    will be used for authentication.
author:
  - skunkworks.erlang_ec2 developers (@skunkworks)
options:
  plugin:
    description: The name of this plugin; it must always be set to V(skunkworks.erlang_ec2.ec2).
    required: true
    type: str
    choices: ['skunkworks.erlang_ec2.ec2']
  regions:
    description:
      - The regions to scan, concurrently (see O(max_concurrency)).
      - If empty, every region that C(DescribeRegions) lists in O(region) (as M(amazon.aws.aws_ec2) does).
    type: list
    elements: str
    default: []
  clusters:
    description:
      - Names of the clusters to include (server-side filter on the C(erlang-cluster) tag). Empty means every cluster.
    type: list
    elements: str
    default: []
  instance_states:
    description:
      - The instance states to include (server-side filter C(instance-state-name)).
    type: list
    elements: str
    default: [pending, running]
    choices: [pending, running, shutting-down, terminated, stopping, stopped]
  filters:
    description:
      - More EC2 C(DescribeInstances) filters, as in M(amazon.aws.aws_ec2), for example C(vpc-id) or C(tag:env).
      - They narrow the search further; they cannot replace the plugin's own C(tag:erlang-cluster), C(tag-key)
        and C(instance-state-name) filters (use O(clusters) and O(instance_states)).
    type: dict
    default: {}
  ansible_host_source:
    description:
      - The instance address to set as C(ansible_host).
      - A host without that address (for example no public IP) gets no C(ansible_host), and a warning names it.
    type: str
    default: private_ip_address
    choices: [private_ip_address, public_ip_address, private_dns_name, public_dns_name]
  node_name_template:
    description:
      - How to build the name part of C(erlang_node) (C(<name>@<private IP>)).
      - If unset, the C(erlang-node-name) tag, else the role's default (C(boot) or C(worker)).
      - If set, a Python format string over C({cluster}), C({role}), C({instance_id}), C({region}) and
        C({default}) (the role's default name), for example C({cluster}_{role}); the tag is then ignored.
      - The result must be a valid Erlang node name (a letter, then letters, digits, C(_) or C(-)).
    type: str
  max_concurrency:
    description:
      - How many DescribeInstances searches run at the same time (one per region and query, that is the main
        query plus one per O(include_filters) and O(exclude_filters) entry).
    type: int
    default: 8
  retries:
    description:
      - How many times a throttled or otherwise retryable request is retried, with exponential backoff and jitter
        (botocore's standard retry mode; per request, so a throttled page does not restart a region).
    type: int
    default: 10
  aws_config:
    description:
      - A dictionary of botocore client configuration (U(https://botocore.amazonaws.com/v1/documentation/api/latest/reference/config.html)),
        as the O(aws_config) option of amazon.aws modules, for example C(read_timeout), C(proxies) or C(retries)
        (which then replaces O(retries)).
    type: dict
  include_filters:
    description:
      - More searches whose instances are added to those of O(filters), as in M(amazon.aws.aws_ec2). Each entry is
        a dict of EC2 C(DescribeInstances) filters and is one more query per region; an instance matching any entry
        is included.
      - Each entry is combined with the plugin's own filters (O(clusters), O(instance_states), the role tag), not
        with O(filters), so it cannot add an instance that is not an Erlang cluster member in those states; an
        entry must not set C(tag:erlang-cluster), C(tag-key) or C(instance-state-name).
    type: list
    elements: dict
    default: []
  exclude_filters:
    description:
      - Searches whose instances are removed from the inventory, as in M(amazon.aws.aws_ec2); they win over
        O(filters) and O(include_filters). Each entry is a dict of EC2 C(DescribeInstances) filters and is one more
        query per region; an instance matching any entry is excluded.
      - An entry may use any filter, C(tag:erlang-cluster) and C(instance-state-name) included (for example
        C(tag:erlang-cluster) V(legacy)).
    type: list
    elements: dict
    default: []
  hostnames:
    description:
      - How hosts are named in the inventory, as in M(amazon.aws.aws_ec2), a list in order of preference; the
        first entry that gives a non-empty value names the host.
      - "An entry is one of V(instance-id), V(private-ip-address), V(ip-address) (public IP), V(private-dns-name),
        V(dns-name) (public DNS name), or C(tag:<key>) (that tag's value; C(tag:<k1>,<k2>): the first of those tags
        that has a value; C(tag:<key>=<value>): C(<key>_<value>) on instances with that tag value)."
      - An entry may also be a dict with C(name) (an entry as above), C(prefix) (another entry) and C(separator)
        (default C(_)); the name is then C(<prefix><separator><name>), or the name alone when the prefix gives no
        value. Unknown entries, Jinja2 filters and literal names are an error (aws_ec2 takes an unknown entry as a
        literal host name).
      - An instance for which no entry gives a value is named by its instance id (with a warning).
      - If several instances get the same name, none of them keeps it; each is named by its instance id instead,
        with a warning naming them. The result does not depend on the order in which AWS lists the instances.
      - Empty (the default) names every host by its instance id. C(ansible_host) (O(ansible_host_source)) and
        C(erlang_boot_server_host) (the boot server's name as chosen here) follow in every case.
    type: list
    elements: raw
    default: []
  hostvars_prefix:
    description:
      - A prefix for the names of the instance attributes this plugin sets (C(ec2_instance_id), C(ec2_region),
        C(ec2_private_ip), C(ec2_state), C(ec2_instance_type), C(ec2_availability_zone), C(ec2_tags)), as in
        M(amazon.aws.aws_ec2); for example V(aws_) gives C(aws_ec2_region). O(compose), O(groups) and
        O(keyed_groups) see the renamed variables.
      - The collection's contract variables keep their names, as the roles and playbooks read them. C(erlang_*)
        and C(ansible_host) are never renamed, and C(ec2_instance_id), C(ec2_region), C(ec2_private_ip)
        and C(ec2_tags) are set under their own names as well as under the renamed ones.
      - Prefix, attribute name and suffix must make a valid variable name.
    type: str
  hostvars_suffix:
    description:
      - A suffix for the names of the instance attributes, as O(hostvars_prefix) (which says what is renamed and
        what is not).
    type: str
  skip_disabled_regions:
    description:
      - If describing a region fails with C(OptInRequired), C(AuthFailure) or C(UnauthorizedOperation) (a region
        the account has not opted into, or one a policy denies it), warn and build the inventory from the other
        regions; such a result is complete for the account and is cached.
      - If no region answered at all, those errors fail the source as any other (bad credentials look the same in
        every region); any other error fails it too (see O(allow_partial_regions)).
      - V(false) makes them errors like any other.
    type: bool
    default: true
  allow_partial_regions:
    description:
      - If a region cannot be described, warn and build the inventory from the other regions instead of failing.
      - A partial result is never cached.
    type: bool
    default: false
"""

EXAMPLES = r"""
# prod.erlang_ec2.yml: every Erlang cluster in two regions, private IPs
plugin: skunkworks.erlang_ec2.ec2
regions:
  - eu-west-1
  - us-east-1

---
# One cluster, reached over its public DNS names, cached for 5 minutes
plugin: skunkworks.erlang_ec2.ec2
regions: [eu-west-1]
clusters: [payments]
ansible_host_source: public_dns_name
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/erlang_ec2_inventory
cache_timeout: 300

---
# Node names from a template, extra EC2 filters and constructed groups
plugin: skunkworks.erlang_ec2.ec2
regions: [us-east-1]
profile: ops
assume_role_arn: arn:aws:iam::123456789012:role/inventory-read
filters:
  vpc-id: vpc-0123456789abcdef0
node_name_template: "{cluster}_{role}"
keyed_groups:
  - key: ec2_availability_zone
    prefix: az
groups:
  erlang_problems: erlang_cluster_problem is defined

---
# Hosts named by their Name tag (else private DNS name), AWS attributes prefixed as in aws_ec2,
# one more team's clusters added and the legacy cluster left out
plugin: skunkworks.erlang_ec2.ec2
regions: [eu-west-1, eu-south-2]
filters:
  tag:team: payments
include_filters:
  - tag:team: [risk]
exclude_filters:
  - tag:erlang-cluster: legacy
hostnames:
  - tag:Name
  - name: private-dns-name
    prefix: tag:env
    separator: "-"
hostvars_prefix: aws_
"""

import hashlib
import json
import os
import re

from collections import namedtuple

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract

from ansible_collections.skunkworks.erlang_ec2.plugins.plugin_utils.ec2_records import (
    REC_ID, REC_PRIVATE_IP, REC_PUBLIC_IP, REC_PRIVATE_DNS, REC_PUBLIC_DNS, REC_STATE, REC_TYPE, REC_ZONE, REC_TAGS,
)
CACHE_FORMAT = 1

ADDRESS_FIELDS = {
    "private_ip_address": REC_PRIVATE_IP,
    "public_ip_address": REC_PUBLIC_IP,
    "private_dns_name": REC_PRIVATE_DNS,
    "public_dns_name": REC_PUBLIC_DNS,
}
TEMPLATE_FIELDS = ("cluster", "role", "instance_id", "region", "default")
# hostnames entries naming a record field (amazon.aws.aws_ec2's names, DescribeInstances filter names).
HOSTNAME_FIELDS = {
    "instance-id": REC_ID,
    "private-ip-address": REC_PRIVATE_IP,
    "ip-address": REC_PUBLIC_IP,
    "private-dns-name": REC_PRIVATE_DNS,
    "dns-name": REC_PUBLIC_DNS,
}
HOSTNAME_DICT_KEYS = ("name", "prefix", "separator")
# The instance attributes hostvars_prefix/hostvars_suffix rename (aws_ec2 renames only what comes from AWS).
ATTRIBUTE_VARS = ("ec2_instance_id", "ec2_region", "ec2_private_ip", "ec2_state", "ec2_instance_type", "ec2_availability_zone", "ec2_tags")
# Attributes the collection's roles and playbooks read under these names: also kept unrenamed.
CONTRACT_ATTRIBUTE_VARS = ("ec2_instance_id", "ec2_region", "ec2_private_ip", "ec2_tags")
# Never renamed: what the roles, playbooks and Ansible itself read.
CONTRACT_VARS = (
    "erlang_cluster", "erlang_role", "erlang_node", "erlang_boot_server_ip", "erlang_boot_node", "erlang_boot_server_host",
    "erlang_boot_server_ips", "erlang_boot_nodes", "erlang_boot_server_hosts",
    "erlang_join", "erlang_cluster_problem", "ansible_host",
) + CONTRACT_ATTRIBUTE_VARS
VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Options that may hold templates, as amazon.aws's AWSInventoryBase.TemplatedOptions lists them.
TEMPLATABLE_OPTIONS = ("access_key", "secret_key", "session_token", "profile", "endpoint_url", "assume_role_arn", "region", "regions", "filters")
# The options that decide which instances a query returns (and so the cache key).
QUERY_OPTIONS = (
    "profile", "assume_role_arn", "endpoint_url", "region", "regions", "clusters", "instance_states", "filters",
    "include_filters", "exclude_filters", "skip_disabled_regions",
)
OWN_FILTERS = ("tag:" + contract.TAG_CLUSTER, "tag-key", "instance-state-name")


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "skunkworks.erlang_ec2.ec2"
    INVENTORY_FILE_SUFFIXES = (".erlang_ec2.yml", ".erlang_ec2.yaml")
    INVENTORY_FILE_NAMES = ("erlang_ec2.yml", "erlang_ec2.yaml")

    def verify_file(self, path):
        if not super().verify_file(path):
            return False
        return os.path.basename(path) in self.INVENTORY_FILE_NAMES or path.endswith(self.INVENTORY_FILE_SUFFIXES)

    # -- options -----------------------------------------------------------
    def _templated(self, name):
        """An option's value with templates rendered (the options AWSInventoryBase templates)."""
        value = self.get_option(name)
        if not value or name not in TEMPLATABLE_OPTIONS:
            return value
        if isinstance(value, dict):
            return dict((k, self.templar.template(v)) for k, v in value.items())
        if isinstance(value, list):
            return [self.templar.template(v) for v in value]
        return self.templar.template(value)

    def _check_config(self, config):
        known = set()
        for name, definition in self.option_definitions.items():
            known.add(name)
            known.update(definition.get("aliases") or ())
        unknown = sorted(set(config) - known)
        if unknown:
            raise AnsibleParserError("%s: unknown option(s): %s" % (self.NAME, ", ".join(unknown)))
        for name in ("max_concurrency", "retries"):
            if self.get_option(name) < (1 if name == "max_concurrency" else 0):
                raise AnsibleParserError("%s: %s must be at least %d" % (self.NAME, name, 1 if name == "max_concurrency" else 0))
        filters = self._templated("filters") or {}
        clash = sorted(set(filters) & set(OWN_FILTERS))
        if clash:
            raise AnsibleParserError(
                "%s: filters must not set %s: use the clusters and instance_states options" % (self.NAME, ", ".join(clash))
            )
        for name in self.get_option("clusters"):
            try:
                contract.validate_cluster_name(name)
            except contract.ClusterContractError as e:
                raise AnsibleParserError("%s: clusters: %s" % (self.NAME, e))
        for name in ("include_filters", "exclude_filters"):
            for entry in self.get_option(name):
                if not isinstance(entry, dict) or not entry:
                    raise AnsibleParserError("%s: every %s entry must be a non-empty dict of EC2 filters, not %r" % (self.NAME, name, entry))
        for entry in self.get_option("include_filters"):
            clash = sorted(set(entry) & set(OWN_FILTERS))
            if clash:
                raise AnsibleParserError(
                    "%s: include_filters must not set %s: use the clusters and instance_states options" % (self.NAME, ", ".join(clash))
                )
        try:
            self._hostname_getters = hostname_getters(self.get_option("hostnames"))
            self._renames = attribute_renames(self.get_option("hostvars_prefix"), self.get_option("hostvars_suffix"))
        except ValueError as e:
            raise AnsibleParserError("%s: %s" % (self.NAME, e))
        template = self.get_option("node_name_template")
        if template:
            try:
                template.format(**dict((k, "x") for k in TEMPLATE_FIELDS))
            except (KeyError, IndexError, ValueError) as e:
                raise AnsibleParserError(
                    "%s: node_name_template %r is not a format string over {%s}: %s"
                    % (self.NAME, template, "}, {".join(TEMPLATE_FIELDS), e)
                )

    def _server_filters(self):
        filters = {"tag:" + contract.TAG_ROLE: list(contract.ROLES), "instance-state-name": self.get_option("instance_states")}
        clusters = self.get_option("clusters")
        if clusters:
            filters["tag:" + contract.TAG_CLUSTER] = clusters
        else:
            filters["tag-key"] = contract.TAG_CLUSTER
        return filters

    # -- cache ---------------------------------------------------------------
    def _query_identity(self):
        """What decides the query's answer: account/role, endpoint, regions and filters."""
        identity = dict((name, self._templated(name)) for name in QUERY_OPTIONS)
        access_key = self._templated("access_key")
        # The access key id names the IAM user (and so the account); keep only a digest of it.
        identity["access_key"] = hashlib.sha256(access_key.encode("utf-8")).hexdigest() if access_key else None
        if not identity["endpoint_url"]:
            # boto3 reads these itself when no endpoint_url is given.
            identity["env_endpoint_url"] = [os.environ.get("AWS_ENDPOINT_URL_EC2"), os.environ.get("AWS_ENDPOINT_URL")]
        return identity

    def get_cache_key(self, path):
        identity = json.dumps(self._query_identity(), sort_keys=True, default=str)
        return "%s_%s" % (super().get_cache_key(path), hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16])

    def _cached_records(self, cache_key):
        try:
            payload = self._cache[cache_key]
        except KeyError:
            return None
        if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
            return None
        return payload.get("regions")

    # -- main ----------------------------------------------------------------
    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        config = self._read_config_data(path)
        self._check_config(config)

        use_cache = self.get_option("cache")
        cache_key = self.get_cache_key(path) if use_cache else None
        records = self._cached_records(cache_key) if (use_cache and cache) else None
        if records is None:
            records, complete = self._fetch()
            if use_cache and complete:
                self._cache[cache_key] = {"format": CACHE_FORMAT, "regions": records}
        self._populate(records)

    def _fetch(self):
        # Imported here: a cache hit never loads boto3.
        from ansible_collections.skunkworks.erlang_ec2.plugins.plugin_utils import ec2_scan

        records, errors, skipped = ec2_scan.fetch(
            self,
            self._server_filters(),
            self._templated("filters"),
            retries=self.get_option("retries"),
            max_concurrency=self.get_option("max_concurrency"),
            include_filters=self.get_option("include_filters"),
            exclude_filters=self.get_option("exclude_filters"),
        )
        if skipped and (not self.get_option("skip_disabled_regions") or not records):
            # No region answered at all: more likely bad credentials than regions not opted into.
            errors = dict(errors)
            errors.update(skipped)
        elif skipped:
            self.display.warning(
                "%s: skipped %d region(s) this account may not use (not opted in, or denied): %s"
                % (self.NAME, len(skipped), "; ".join("%s: %s" % (region, skipped[region]) for region in sorted(skipped)))
            )
        if errors:
            detail = "; ".join("%s: %s" % (region, errors[region]) for region in sorted(errors))
            if not self.get_option("allow_partial_regions"):
                raise AnsibleError(
                    "%s: could not describe instances in %d region(s), the inventory would be incomplete: %s"
                    % (self.NAME, len(errors), detail)
                )
            self.display.warning(
                "%s: inventory is PARTIAL, skipped %d region(s) (allow_partial_regions is on; not cached): %s"
                % (self.NAME, len(errors), detail)
            )
        return records, not errors

    def _node_namer(self):
        """A function (cluster, role, instance_id, region, tags) -> node name part."""
        template = self.get_option("node_name_template")
        defaults = contract.DEFAULT_NODE_NAMES
        valid = {}

        def checked(name):
            ok = valid.get(name)
            if ok is None:
                ok = valid[name] = bool(contract.NODE_NAME_RE.match(name))
            return ok

        if template:
            def from_template(cluster, role, instance_id, region, tags):
                name = template.format(cluster=cluster, role=role, instance_id=instance_id, region=region, default=defaults[role])
                if not checked(name):
                    raise AnsibleError(
                        "%s: node_name_template %r gives %r for %s, not a valid Erlang node name" % (self.NAME, template, name, instance_id)
                    )
                return name
            return from_template

        bad_tags = []

        def from_tag(cluster, role, instance_id, region, tags):
            name = tags.get(contract.TAG_NODE_NAME)
            if name is None:
                return defaults[role]
            if checked(name):
                return name
            bad_tags.append("%s (%r)" % (instance_id, name))
            return defaults[role]
        from_tag.bad_tags = bad_tags
        return from_tag

    def _populate(self, records_by_region):
        """Add the hosts, groups and hostvars: boot-server discovery, then each host's vars."""
        namer = self._node_namer()
        hosts, servers_by_cluster = collect_hosts(records_by_region, namer)
        names, unnamed, clashes = assign_hostnames(hosts, getattr(self, "_hostname_getters", None))
        if unnamed:
            self.display.warning(
                "%s: no hostnames entry gives a name to %d instance(s), named by their instance id: %s"
                % (self.NAME, len(unnamed), ", ".join(unnamed[:10]))
            )
        if clashes:
            self.display.warning(
                "%s: hostnames gives the same name to several instances, which are all named by their instance id instead: %s"
                % (self.NAME, "; ".join("%s (%s)" % (name, ", ".join(clashes[name])) for name in sorted(clashes)[:10]))
            )
        boot = {}
        for cluster_name, servers in servers_by_cluster.items():
            boot[cluster_name] = cluster_boot_servers(servers)
            if boot[cluster_name].problem:
                self.display.warning("%s: Erlang cluster %r: %s" % (self.NAME, cluster_name, boot[cluster_name].problem))
            elif names:
                # erlang_boot_server_hosts are the boot servers' inventory hostnames, whatever names them.
                boot[cluster_name] = boot[cluster_name]._replace(hosts=tuple(names[h] for h in boot[cluster_name].hosts))
        bad_tags = getattr(namer, "bad_tags", None)
        if bad_tags:
            self.display.warning(
                "%s: ignored invalid %s tag on %d instance(s), using the role's default name: %s"
                % (self.NAME, contract.TAG_NODE_NAME, len(bad_tags), ", ".join(bad_tags[:10]))
            )
        self._add_hosts(hosts, boot, names)

    def _add_hosts(self, hosts, boot, names=None):
        """Each host in its role and cluster groups, with its hostvars and the constructed options."""
        inventory = self.inventory
        add_host, set_variable = inventory.add_host, inventory.set_variable
        role_groups = dict((role, inventory.add_group(contract.GROUP_BY_ROLE[role])) for role in contract.ROLES)
        cluster_groups = dict((name, inventory.add_group(contract.cluster_group(name))) for name in sorted(boot))
        address_field = ADDRESS_FIELDS[self.get_option("ansible_host_source")]
        strict = self.get_option("strict")
        compose, groups, keyed_groups = self.get_option("compose"), self.get_option("groups"), self.get_option("keyed_groups")
        constructed = bool(compose or groups or keyed_groups)
        renames = getattr(self, "_renames", None)
        no_address = []
        for record, region, cluster_name, role, node_name in hosts:
            instance_id = record[REC_ID]
            hostvars = prepare_host_vars(record, region, cluster_name, role, node_name, boot[cluster_name], address_field)
            if renames:
                rename_attributes(hostvars, renames)
            if "ansible_host" not in hostvars:
                no_address.append(instance_id)
            if names:
                instance_id = names[instance_id]  # the inventory hostname from here on
            add_host(instance_id, group=role_groups[role])
            add_host(instance_id, group=cluster_groups[cluster_name])
            for key, value in hostvars.items():
                set_variable(instance_id, key, value)
            if constructed:
                self._set_composite_vars(compose, hostvars, instance_id, strict=strict)
                self._add_host_to_composed_groups(groups, hostvars, instance_id, strict=strict)
                self._add_host_to_keyed_groups(keyed_groups, hostvars, instance_id, strict=strict)
        if no_address:
            self.display.warning(
                "%s: %d host(s) have no %s, so no ansible_host: %s"
                % (self.NAME, len(no_address), self.get_option("ansible_host_source"), ", ".join(no_address[:10]))
            )


# A cluster's boot servers as every host of the cluster sees them: their private IPs, Erlang nodes and
# inventory hostnames (tuples in the same order, sorted by IP), or (all three empty) what is wrong.
BootServers = namedtuple("BootServers", ["ips", "nodes", "hosts", "problem"])


def collect_hosts(records_by_region, namer):
    """Boot-server discovery, one pass over the records (no copies of them).

    Returns the hosts [(record, region, cluster, role, node name)] sorted by instance id and
    {cluster: [(instance id, private IP, node name) of each of its boot servers]}.
    """
    tag_cluster, tag_role, roles = contract.TAG_CLUSTER, contract.TAG_ROLE, contract.ROLES
    hosts = []
    boot_servers = {}
    for region in sorted(records_by_region):
        for record in records_by_region[region]:
            tags = record[REC_TAGS]
            cluster_name, role = tags.get(tag_cluster), tags.get(tag_role)
            if not cluster_name or role not in roles:
                continue  # the server-side filters keep these out; defensive
            node_name = namer(cluster_name, role, record[REC_ID], region, tags)
            hosts.append((record, region, cluster_name, role, node_name))
            servers = boot_servers.setdefault(cluster_name, [])
            if role == contract.ROLE_BOOT_SERVER:
                servers.append((record[REC_ID], record[REC_PRIVATE_IP], node_name))
    hosts.sort(key=lambda host: host[0][REC_ID])
    return hosts, boot_servers


def cluster_boot_servers(servers):
    """A cluster's BootServers from its [(instance id, private IP, node name)]; a problem if none, or one has no IP."""
    problem = None
    no_ip = sorted(server[0] for server in servers if not server[1])
    if not servers:
        problem = "no boot server"
    elif len(no_ip) == 1:
        problem = "boot server %s has no private IP address" % no_ip[0]
    elif no_ip:
        problem = "boot servers %s have no private IP address" % ", ".join(no_ip)
    if problem:
        return BootServers((), (), (), problem)
    # By address, numerically; the instance id only breaks a tie (one cluster over two VPCs).
    ordered = sorted(servers, key=lambda server: (contract.ipv4_sort_key(server[1]), server[0]))
    return BootServers(tuple(ip for _id, ip, _name in ordered),
                       tuple(contract.node_id(name, ip) for _id, ip, name in ordered),
                       tuple(instance_id for instance_id, _ip, _name in ordered), None)


def prepare_host_vars(record, region, cluster_name, role, node_name, boot, address_field):
    """The hostvars of one host, from its record and its cluster's BootServers."""
    private_ip = record[REC_PRIVATE_IP]
    hostvars = {
        "erlang_cluster": cluster_name,
        "erlang_role": role,
        "erlang_node": contract.node_id(node_name, private_ip) if private_ip else None,
        "erlang_boot_server_ips": list(boot.ips),
        "erlang_boot_nodes": list(boot.nodes),
        "erlang_boot_server_hosts": list(boot.hosts),
        "erlang_boot_server_ip": boot.ips[0] if boot.ips else None,
        "erlang_boot_node": boot.nodes[0] if boot.nodes else None,
        "erlang_join": record[REC_TAGS].get(contract.TAG_JOIN, contract.JOIN_PUSH) if role == contract.ROLE_WORKER else None,
        "ec2_instance_id": record[REC_ID],
        "ec2_region": region,
        "ec2_private_ip": private_ip,
        "ec2_state": record[REC_STATE],
        "ec2_instance_type": record[REC_TYPE],
        "ec2_availability_zone": record[REC_ZONE],
        "ec2_tags": record[REC_TAGS],
    }
    if boot.hosts:
        # The first boot server's inventory hostname (the one `hostnames` gave it), for delegate_to/hostvars.
        hostvars["erlang_boot_server_host"] = boot.hosts[0]
    if boot.problem:
        hostvars["erlang_cluster_problem"] = boot.problem
    address = record[address_field]
    if address:
        hostvars["ansible_host"] = address
    return hostvars


def hostname_getter(entry):
    """A function record -> name or None, from one `hostnames` entry; ValueError if the entry is not understood."""
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - set(HOSTNAME_DICT_KEYS))
        if unknown or not entry.get("name"):
            raise ValueError("a hostnames dict needs `name` and may have only %s, not %r" % (", ".join(HOSTNAME_DICT_KEYS), entry))
        name = hostname_getter(entry["name"])
        prefix = hostname_getter(entry["prefix"]) if entry.get("prefix") else None
        separator = entry.get("separator", "_")
        if not isinstance(separator, str):
            raise ValueError("hostnames separator must be a string, not %r" % (separator,))

        def prefixed(record):
            # As aws_ec2: the prefix only when both give a value, the name alone when the prefix does not.
            value = name(record)
            before = prefix(record) if (value and prefix) else None
            return before + separator + value if before else value
        return prefixed
    if not isinstance(entry, str):
        raise ValueError("hostnames entries are strings or dicts, not %r" % (entry,))
    if "|" in entry or "{" in entry:
        raise ValueError("hostnames entry %r: Jinja2 filters and templates are not supported" % entry)
    if entry.startswith("tag:"):
        keys = entry[len("tag:"):].split(",")
        if not all(keys):
            raise ValueError("hostnames entry %r: an empty tag key" % entry)

        def from_tags(record):
            # As aws_ec2: the first listed tag with a value; `Key=Value` gives `Key_Value` on instances that have it.
            tags = record[REC_TAGS]
            for key in keys:
                if "=" in key:
                    key, wanted = key.split("=", 1)
                    if tags.get(key) == wanted:
                        return "%s_%s" % (key, wanted)
                elif tags.get(key):
                    return tags[key]
            return None
        return from_tags
    if entry not in HOSTNAME_FIELDS:
        raise ValueError(
            "unknown hostnames entry %r: use %s or tag:<key>" % (entry, ", ".join(sorted(HOSTNAME_FIELDS)))
        )
    field = HOSTNAME_FIELDS[entry]
    return lambda record: record[field] or None


def hostname_getters(hostnames):
    """The getters of the `hostnames` option, in order (empty: hosts are named by instance id)."""
    return [hostname_getter(entry) for entry in hostnames or ()]


def assign_hostnames(hosts, getters):
    """Inventory hostnames: ({instance id: name}, [unnamed instance ids], {clashing name: [instance ids]}).

    Each host gets the first non-empty value of the getters, else its instance id. A name that
    several instances get names none of them: each of those falls back to its own instance id
    (and again, until no name is shared), so the result does not depend on the order of the hosts.
    With no getters, ({}, [], {}): the instance id is the name.
    """
    if not getters:
        return {}, [], {}
    chosen, unnamed = {}, []
    for host in hosts:
        record = host[0]
        instance_id = record[REC_ID]
        for getter in getters:
            name = getter(record)
            if name:
                break
        else:
            name = instance_id
            unnamed.append(instance_id)
        chosen[instance_id] = str(name)
    clashes = {}
    while True:
        by_name = {}
        for instance_id, name in chosen.items():
            by_name.setdefault(name, []).append(instance_id)
        shared = dict((name, ids) for name, ids in by_name.items() if len(ids) > 1)
        if not shared:
            break
        for name, ids in shared.items():
            clashes.setdefault(name, set()).update(ids)
            for instance_id in ids:
                chosen[instance_id] = instance_id  # ids are unique: each round settles at least one host
    return chosen, sorted(unnamed), dict((name, sorted(ids)) for name, ids in clashes.items())


def attribute_renames(prefix, suffix):
    """{attribute var: its name with hostvars_prefix/hostvars_suffix} ({} without them); ValueError if invalid."""
    prefix, suffix = prefix or "", suffix or ""
    if not (prefix or suffix):
        return {}
    renames = dict((name, prefix + name + suffix) for name in ATTRIBUTE_VARS)
    bad = sorted(new for new in renames.values() if not VAR_NAME_RE.match(new))
    if bad:
        raise ValueError("hostvars_prefix/hostvars_suffix %r/%r give invalid variable names: %s" % (prefix, suffix, ", ".join(bad)))
    taken = sorted(set(renames.values()) & set(CONTRACT_VARS))
    if taken:
        raise ValueError("hostvars_prefix/hostvars_suffix %r/%r give names the collection uses: %s" % (prefix, suffix, ", ".join(taken)))
    return renames


def rename_attributes(hostvars, renames):
    """Rename the instance attributes in place; those the roles read (CONTRACT_ATTRIBUTE_VARS) stay as well."""
    for name, new in renames.items():
        if name in CONTRACT_ATTRIBUTE_VARS:
            hostvars[new] = hostvars[name]
        else:
            hostvars[new] = hostvars.pop(name)
    return hostvars
