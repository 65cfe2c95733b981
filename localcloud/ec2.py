"""What localcloud changes in moto's EC2, in-process (the daemon only; moto elsewhere is untouched).

- An instance launched without a subnet goes to the default VPC's default subnet of its zone, as on EC2
  (moto would give it a random 10.x address, outside the container network).
- Instance states follow the hosts as on EC2: pending -> running (when sshd answers), stopping -> stopped,
  shutting-down -> terminated; the reconciler makes the second step once the container has followed.
- Every region has localcloud's AMIs (fixed ids) and the default key pair `localcloud`.
- RunInstances refuses to go beyond LOCALCLOUD_MAX_HOSTS live instances (InstanceLimitExceeded).
- RunInstances honours ClientToken (idempotent launch), which moto ignores; DescribeInstances has the
  `client-token` filter.
- A VPC's default security group allows all inbound traffic from its own members, as on EC2 (moto gives it
  no inbound rule); instances launched without a group are in it, and DescribeInstances says so (moto: no
  group). firewall.py enforces the groups.
- An IAM instance profile named in RunInstances is associated with every instance it launches (moto: only the
  first), and one named by the launch template (RunInstances or Auto Scaling) too (moto: none); a template naming
  a profile that does not exist fails the launch, as on EC2. IMDS serves the role's credentials (credentials.py).
- CreateImage commits the instance's container to a new image mapped to the new AMI id; DeregisterImage
  removes that image again.
"""

import base64
import copy
import functools
import ipaddress
import threading

from moto.core.types import Base64EncodedString
from moto.ec2.models import EC2Backend, ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2 import utils as ec2_utils
from moto.ec2.utils import filter_iam_instance_profiles
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.instances import Instance, StateReason
from moto.ec2.models.security_groups import SecurityGroupRule

from localcloud import config

STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
MOTO_NO_CLIENT_TOKEN = "ABCDE"  # what moto's RunInstances passes when the request has no ClientToken
_lock = threading.RLock()  # guards state changes made outside moto's request handling
_installed = []


def state_lock():
    """Held while the daemon saves its state (no reconciler change in between)."""
    return _lock


def set_state(instance, name, only_from=None, reason=None):
    """Move `instance` to state `name` (if it is still in one of `only_from`); True if it moved."""
    with _lock:
        if only_from is not None and instance._state.name not in only_from:
            return False
        instance._state.name = name
        instance._state.code = STATE_CODES[name]
        if reason:
            instance._reason = reason
            instance.state_reason = StateReason("Server.InternalError: %s" % reason, "Server.InternalError")
        return True


def user_data_bytes(instance):
    data = instance.user_data
    if data is None:
        return None
    if isinstance(data, Base64EncodedString):
        return base64.b64decode(data.as_bytes())
    if isinstance(data, bytes):
        data = data.decode()
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        return str(data).encode()


def all_instances():
    """Every instance of every created EC2 backend (all accounts, all regions): [(region, instance)]."""
    found = []
    for _ in range(3):  # a backend created meanwhile changes the dicts; retry the snapshot
        try:
            found = []
            for _account, regions in list(ec2_backends.items()):
                for region, backend in list(regions.items()):
                    for reservation in list(backend.reservations.values()):
                        found.extend((region, instance) for instance in list(reservation.instances))
            return found
        except RuntimeError:
            continue
    return found


def network_of(instance):
    """The network an instance's host is on: one per region and account (see config.region_network_name)."""
    return config.region_network_name(instance.owner_id, instance.region_name)


def in_network(ip):
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    network = ipaddress.ip_network(config.NETWORK_SUBNET)
    return address in network and address not in (network.network_address, network.broadcast_address, ipaddress.ip_address(config.NETWORK_GATEWAY))


def _add_default_group_rule(backend, group):
    """EC2's rule of a default group: all traffic from the group itself (once: a revoke is the user's choice)."""
    if getattr(group, "localcloud_default_rule", False):
        return
    group.localcloud_default_rule = True
    if not any(r.source_group.get("GroupId") == group.id and r.ip_protocol == "-1" for r in group.ingress_rules):
        group.ingress_rules.append(SecurityGroupRule(backend, "-1", group.id, None, None, None, is_egress=False,
                                                     source_group={"GroupId": group.id, "UserId": backend.account_id, "OwnerId": backend.account_id}))


def add_default_group_rules():
    """Give EC2's rule to the default groups that never had it (state saved by an older daemon)."""
    with _lock:
        for _account, regions in list(ec2_backends.items()):
            for _region, backend in list(regions.items()):
                for groups in list(backend.groups.values()):
                    for group in list(groups.values()):
                        if group.is_default and group.name == "default":
                            _add_default_group_rule(backend, group)


def _profile_to_associate(backend, kwargs):
    """({"Name"|"Arn": ...}, first): the launch's instance profile, and whether moto associates it with the first
    instance itself (its RunInstances response does, after the backend's run_instances); (None, False) if none."""
    if kwargs.get("iam_instance_profile_name") or kwargs.get("iam_instance_profile_arn"):
        return {"Name": kwargs.get("iam_instance_profile_name"), "Arn": kwargs.get("iam_instance_profile_arn")}, True
    if kwargs.get("launch_template"):
        spec = backend._get_template_from_args(kwargs["launch_template"]).data.get("IamInstanceProfile") or {}
        if spec.get("Name") or spec.get("Arn"):
            try:
                found = filter_iam_instance_profiles(backend.account_id, backend.partition, spec.get("Arn"), spec.get("Name"))
            except Exception:  # moto's IAM: NoSuchEntity
                found = None
            if found is None:
                raise EC2ClientError("InvalidParameterValue", "Value (%s) for parameter iamInstanceProfile is invalid: no such instance profile"
                                     % (spec.get("Arn") or spec.get("Name")))
            return spec, False
    return None, False


def install(reconciler, default_public_key=None):
    """Patch moto's EC2 backend; `reconciler.wake()` is called after every change of instance state."""
    if _installed:
        return
    _installed.append(True)

    original_init = EC2Backend.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        for ami_id, name, description in (
            (config.BASE_AMI_ID, config.BASE_IMAGE_NAME, "localcloud: Debian 12 (bookworm), systemd, sshd, python3, user admin"),
            (config.BAKED_AMI_ID, config.BAKED_IMAGE_NAME, "localcloud: Debian 12 (bookworm) with Debian's Erlang/OTP"),
        ):
            self.amis[ami_id] = Ami(
                self,
                ami_id=ami_id,
                name=name,
                description=description,
                owner_alias="localcloud",
                public=True,
                virtualization_type="hvm",
                architecture="x86_64",
                hypervisor="xen",
                root_device_type="ebs",
                root_device_name="/dev/xvda",
                region_name=self.region_name,
            )
        if default_public_key and config.DEFAULT_KEY_NAME not in self.key_pairs:
            self.import_key_pair(config.DEFAULT_KEY_NAME, default_public_key.encode(), tags={})

    EC2Backend.__init__ = __init__

    original_create_group = EC2Backend.create_security_group

    @functools.wraps(original_create_group)
    def create_security_group(self, name, description, *args, **kwargs):
        group = original_create_group(self, name, description, *args, **kwargs)
        if group.is_default and name == "default":
            _add_default_group_rule(self, group)
        return group

    EC2Backend.create_security_group = create_security_group

    original_run = EC2Backend.run_instances

    @functools.wraps(original_run)
    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        token = kwargs.get("client_token")
        if token and token != MOTO_NO_CLIENT_TOKEN:  # EC2: a retried RunInstances with the same ClientToken returns the first launch (moto ignores it)
            for reservation in list(self.reservations.values()):
                if reservation.instances and all(i.client_token == token for i in reservation.instances):
                    return reservation
        live = sum(1 for _region, i in all_instances() if i._state.name not in ("shutting-down", "terminated"))
        if live + count > config.max_hosts():  # every instance is a container on this one machine
            raise EC2ClientError(
                "InstanceLimitExceeded",
                "localcloud runs at most %d instances at once (LOCALCLOUD_MAX_HOSTS); %d are running, %d more asked for"
                % (config.max_hosts(), live, count),
            )
        nics = kwargs.get("nics") or []
        if not kwargs.get("subnet_id") and not any("SubnetId" in n or "NetworkInterfaceId" in n for n in nics):
            zone = kwargs.get("placement") or self.region_name + "a"
            subnet = self.get_default_subnets().get(zone)
            if subnet is not None:  # EC2: the default subnet of the zone; moto: a random 10.x address
                kwargs["subnet_id"] = subnet.id
                if kwargs.get("associate_public_ip") is False:
                    kwargs["associate_public_ip"] = None  # the subnet's map-public-ip-on-launch decides, as on EC2
        profile, first_by_moto = _profile_to_associate(self, kwargs)
        reservation = original_run(self, image_id, count, user_data, security_group_names, **kwargs)
        if profile is not None:
            for instance in reservation.instances[1 if first_by_moto else 0:]:
                self.associate_iam_instance_profile(instance_id=instance.id, iam_instance_profile_name=profile.get("Name"),
                                                    iam_instance_profile_arn=profile.get("Arn"))
        for instance in reservation.instances:
            key = self.key_pairs.get(instance.key_name) if instance.key_name else None
            # EC2 copies the public key at launch: deleting the key pair later does not change the instance.
            instance.localcloud_public_key = key.public_key.strip() if key is not None else None
            if not instance.security_groups:  # EC2 reports the primary interface's groups (the default group when none was named)
                primary = [n for n in instance.nics.values() if (n.device_index or 0) == 0]
                instance.security_groups = list(primary[0].group_set) if primary else []
            set_state(instance, "pending")
        reconciler.wake()
        return reservation

    EC2Backend.run_instances = run_instances

    def _follow(method_name, transient, unless):
        original = getattr(EC2Backend, method_name)

        @functools.wraps(original)
        def wrapper(self, instance_ids, *args, **kwargs):
            changed = original(self, instance_ids, *args, **kwargs)
            for instance, previous in changed:
                if previous.name not in unless:
                    set_state(instance, transient)
            reconciler.wake()
            return changed

        setattr(EC2Backend, method_name, wrapper)

    _follow("start_instances", "pending", unless=("running", "pending", "terminated", "shutting-down"))
    _follow("stop_instances", "stopping", unless=("stopped", "terminated", "shutting-down"))
    _follow("terminate_instances", "shutting-down", unless=("terminated",))

    following_terminate = EC2Backend.terminate_instances

    @functools.wraps(following_terminate)
    def terminate_instances(self, instance_ids, *args, **kwargs):
        # EC2 answers a repeated terminate with the instance as it is; moto terminates it again and fails
        # (InvalidNetworkInterfaceID.NotFound) when its interface was deleted on termination.
        instances = self.get_multi_instances_by_id(instance_ids) if instance_ids else []
        done = [i for i in instances if i._state.name == "terminated"]
        rest = [i.id for i in instances if i._state.name != "terminated"]
        changed = following_terminate(self, rest, *args, **kwargs) if rest or not instance_ids else []
        return list(changed) + [(i, copy.copy(i._state)) for i in done]

    EC2Backend.terminate_instances = terminate_instances

    original_reboot = EC2Backend.reboot_instances

    @functools.wraps(original_reboot)
    def reboot_instances(self, instance_ids):
        rebooted = original_reboot(self, instance_ids)
        for instance in rebooted:
            reconciler.reboot(instance)
        return rebooted

    EC2Backend.reboot_instances = reboot_instances

    # EC2's DescribeInstances filter client-token (moto answers it with a 500).
    Instance.localcloud_client_token = property(lambda self: None if self.client_token == MOTO_NO_CLIENT_TOKEN else self.client_token)
    ec2_utils.filter_dict_attribute_mapping["client-token"] = "localcloud_client_token"

    original_create_image = EC2Backend.create_image

    @functools.wraps(original_create_image)
    def create_image(self, instance_id, name, description, tag_specifications, *args, **kwargs):
        # EC2 tags the new snapshots too; moto raises NotImplementedError for that (a 500): there are no
        # snapshots here, so those tags are accepted and dropped.
        tag_specifications = [t for t in tag_specifications or [] if t.get("ResourceType") != "snapshot"]
        ami = original_create_image(self, instance_id, name, description, tag_specifications, *args, **kwargs)
        ami.state = "pending"
        reconciler.create_image(self.get_instance(instance_id), ami)
        return ami

    EC2Backend.create_image = create_image

    original_deregister = EC2Backend.deregister_image

    @functools.wraps(original_deregister)
    def deregister_image(self, ami_id, *args, **kwargs):
        result = original_deregister(self, ami_id, *args, **kwargs)
        reconciler.forget_image(ami_id)
        return result

    EC2Backend.deregister_image = deregister_image
