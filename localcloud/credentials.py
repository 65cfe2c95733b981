"""Instance-role credentials as EC2's IMDS serves them, and the caller SSM records; in-process moto (the daemon).

- An instance with an IAM instance profile gets the credentials of the profile's role, assumed through moto's
  STS with the instance id as the session name, as EC2 does: its identity is
  arn:aws:sts::<account>:assumed-role/<role>/<instance id>. They are cached per instance and assumed again
  REFRESH_BEFORE their expiration (EC2 also hands out new ones well before the old ones expire).
- SSM's LastModifiedUser: moto answers "N/A" for every parameter; AWS records the ARN of the caller that wrote
  each version. install() makes moto record it (the caller as moto's STS GetCallerIdentity names it), so a
  reader can tell which instance wrote a parameter.
"""

import datetime
import functools
import json
import threading

from moto.core.utils import utcnow
from moto.sts.models import sts_backends
from moto.utilities.utils import get_partition

DURATION_SECONDS = 6 * 3600  # what EC2 gives instance-role credentials
REFRESH_BEFORE = datetime.timedelta(minutes=15)
_cache = {}  # instance id -> (role ARN, moto AssumedRole)
_lock = threading.Lock()
_installed = []


def _timestamp(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def profile_of(instance):
    """The instance's IAM instance profile (moto's), or None."""
    association = getattr(instance.ec2_backend, "iam_instance_profile_associations", {}).get(instance.id)
    return association.iam_instance_profile if association is not None else None


def role_of(profile):
    roles = list(getattr(profile, "roles", []) or [])
    return roles[0] if roles else None  # an instance profile holds at most one role


def assumed_role(instance, role):
    """moto's AssumedRole for `instance` in `role`: the cached one unless it expires within REFRESH_BEFORE."""
    now = utcnow()
    with _lock:
        for instance_id in [i for i, (_arn, cached) in _cache.items() if cached.expiration <= now]:
            del _cache[instance_id]  # expired (e.g. the instance is gone): nobody can use them any more
        cached = _cache.get(instance.id)
        if cached is not None and cached[0] == role.arn and cached[1].expiration - now > REFRESH_BEFORE:
            return cached[1]
        backend = sts_backends[instance.owner_id][get_partition(instance.region_name)]
        assumed = backend.assume_role(region_name=instance.region_name, role_session_name=instance.id, role_arn=role.arn,
                                      policy=None, duration=DURATION_SECONDS, external_id=None)
        _cache[instance.id] = (role.arn, assumed)
        return assumed


def iam_info(profile):
    """meta-data/iam/info."""
    return json.dumps({
        "Code": "Success",
        "LastUpdated": _timestamp(getattr(profile, "create_date", None) or utcnow()),
        "InstanceProfileArn": profile.arn,
        "InstanceProfileId": profile.id,
    }, indent=2)


def security_credentials(instance, role):
    """meta-data/iam/security-credentials/<role>."""
    assumed = assumed_role(instance, role)
    return json.dumps({
        "Code": "Success",
        "LastUpdated": _timestamp(assumed.expiration - datetime.timedelta(seconds=DURATION_SECONDS)),
        "Type": "AWS-HMAC",
        "AccessKeyId": assumed.access_key_id,
        "SecretAccessKey": assumed.secret_access_key,
        "Token": assumed.session_token,
        "Expiration": _timestamp(assumed.expiration),
    }, indent=2)


def caller_arn(response):
    """The ARN of the caller of a moto request, as moto's STS GetCallerIdentity gives it."""
    region = response.region or "us-east-1"
    backend = sts_backends[response.current_account][get_partition(region)]
    return backend.get_caller_identity(response.get_access_key(), region)[1]


def install():
    """Make moto's SSM record who wrote each parameter version (LastModifiedUser)."""
    if _installed:
        return
    _installed.append(True)
    from moto.ssm.models import Parameter, SimpleSystemManagerBackend
    from moto.ssm.responses import SimpleSystemManagerResponse

    writer = threading.local()  # the caller of the PutParameter being handled in this thread
    original_response = SimpleSystemManagerResponse.put_parameter

    @functools.wraps(original_response)
    def put_parameter_response(self):
        try:
            writer.arn = caller_arn(self)
        except Exception:  # a request moto itself would still serve: record nothing rather than fail it
            writer.arn = None
        try:
            return original_response(self)
        finally:
            writer.arn = None

    SimpleSystemManagerResponse.put_parameter = put_parameter_response

    original_backend = SimpleSystemManagerBackend.put_parameter

    @functools.wraps(original_backend)
    def put_parameter(self, *args, **kwargs):
        parameter = original_backend(self, *args, **kwargs)
        if parameter is not None and getattr(writer, "arn", None):
            parameter.localcloud_last_modified_user = writer.arn
        return parameter

    SimpleSystemManagerBackend.put_parameter = put_parameter

    original_describe = Parameter.describe_response_object

    @functools.wraps(original_describe)
    def describe_response_object(self, *args, **kwargs):
        described = original_describe(self, *args, **kwargs)
        user = getattr(self, "localcloud_last_modified_user", None)
        if user:
            described["LastModifiedUser"] = user
        return described

    Parameter.describe_response_object = describe_response_object
