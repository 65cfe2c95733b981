"""The localcloud daemon: moto (EC2, SSM, Auto Scaling...) on loopback, IMDS, and the reconciler, in one process."""

import collections
import contextlib
import json
import logging
import os
import pickle  # nosec - only our own state file, see restore_state
import signal
import tempfile
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

from localcloud import autoscaling, config, credentials, ec2, images, netns, network
from localcloud.errors import LocalcloudError
from localcloud.imds import Imds
from localcloud.podman import Podman
from localcloud.reconciler import Reconciler

log = logging.getLogger("localcloud")
HEALTH_PATH = "/localcloud/health"


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


# Services whose state a `restart` carries over (what localcloud is for; others start empty again).
PERSISTED_SERVICES = ("ec2", "autoscaling", "ssm", "iam", "kms", "sts", "elb", "elbv2")


def _defaultdict_of_dict():
    return collections.defaultdict(dict)


class _StatePickler(pickle.Pickler):
    """moto keeps some defaultdicts with lambda factories (e.g. SSM's tags): pickle them with a named factory."""

    def reducer_override(self, obj):
        if not isinstance(obj, collections.defaultdict):
            return NotImplemented
        factory = obj.default_factory
        if getattr(factory, "__name__", "") == "<lambda>":
            sample = factory()
            if isinstance(sample, collections.defaultdict) and sample.default_factory is dict:
                factory = _defaultdict_of_dict
            elif type(sample) in (dict, list, set, int, str) and not sample:
                factory = type(sample)
            else:
                raise pickle.PicklingError("cannot save a defaultdict whose factory makes %r" % (sample,))
        elif type(obj) is collections.defaultdict:
            return NotImplemented
        # Subclasses (e.g. SSM's ParameterDict) need their own __init__ arguments: rebuild without calling it.
        return (_rebuild_defaultdict, (type(obj), factory, dict(getattr(obj, "__dict__", {})), dict(obj)))


def _rebuild_defaultdict(cls, factory, attributes, items):
    rebuilt = cls.__new__(cls)
    collections.defaultdict.__init__(rebuilt, factory)
    if attributes:
        rebuilt.__dict__.update(attributes)
    dict.update(rebuilt, items)
    return rebuilt


def write_atomically(path, write):
    """Write `path` through `write(handle)` all at once or not at all.

    The data goes to a temporary file of its own (unique name, mode 0600 from the start, next to `path`), is
    flushed to disk, then renamed over `path`. Nothing else can be at that temporary path (a fixed name was: a
    directory left there, or a second writer, made every save fail), and a failed write leaves no temporary
    file and `path` as it was.
    """
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def dump_state(path, listeners):
    """Pickle the persisted services' backends (one pickle: objects refer to each other) and the IMDS tokens of
    every network (`listeners`: {network name: Imds})."""
    from moto.backends import get_backend

    default = listeners.get(config.NETWORK_NAME)
    state = {
        "services": {},
        "tokens": default.export_tokens() if default is not None else {},  # the default network's (the format before regions)
        "network_tokens": {name: imds.export_tokens() for name, imds in listeners.items() if name != config.NETWORK_NAME},
    }
    for name in PERSISTED_SERVICES:
        backends = get_backend(name)
        if len(backends):
            state["services"][name] = dict(backends)
    write_atomically(path, lambda handle: _StatePickler(handle, protocol=pickle.HIGHEST_PROTOCOL).dump(state))


def restore_state(path, listeners):
    from moto.backends import get_backend

    with open(path, "rb") as handle:
        state = pickle.load(handle)  # nosec - written by the previous daemon, in our own state directory (0600)
    for name, accounts in state["services"].items():
        backends = get_backend(name)
        backends.clear()
        backends.update(accounts)
    # moto hands out subnet addresses from an iterator cached outside the subnet objects (not pickled): the new
    # subnets' iterators start again at .1; skip the three addresses EC2 reserves, as moto does at creation
    # (addresses in use are skipped by moto itself).
    for accounts in state["services"].get("ec2", {}).values():
        for backend in accounts.values():
            for subnets in list(backend.subnets.values()):
                for subnet in list(subnets.values()):
                    for _ in range(3):
                        next(iter(subnet._subnet_ip_generator))
    tokens = dict(state.get("network_tokens") or {}, **{config.NETWORK_NAME: state.get("tokens") or {}})
    for name, network_tokens in tokens.items():
        if name in listeners:
            listeners[name].import_tokens(network_tokens)
        elif network_tokens:
            log.warning("dropping %d IMDS token(s) of network %s, which is gone", len(network_tokens), name)
    path.unlink()
    return sum(len(list(b.reservations)) for accounts in state["services"].get("ec2", {}).values() for b in accounts.values())


class HostApi(netns.ServedSocket):
    """The API `app` on IMDS_ADDRESS:HOST_API_PORT in `network` (the socket lives in that network's namespace),
    for the hosts: localcloud's stand-in for VPC interface endpoints (hosts do not reach this machine's loopback)."""

    def __init__(self, app, network=config.NETWORK_NAME, address=config.IMDS_ADDRESS, port=config.HOST_API_PORT):
        super().__init__(None if network == config.NETWORK_NAME else network,
                         lambda: make_server(address, port, app, threaded=True, request_handler=_QuietHandler),
                         "host-api-%s" % network)


def serve(paths, port, restore=False):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    podman = Podman(paths.containers_conf)
    image_refs = {"base": images.base_image_ref(), "baked": images.baked_image_ref()}
    network.ensure_network(podman)
    network.ensure_imds_address()

    reconciler = Reconciler(podman, paths, image_refs)
    public_key = paths.ssh_key.with_suffix(".pub").read_text().strip() if paths.ssh_key.with_suffix(".pub").exists() else None
    ec2.install(reconciler, default_public_key=public_key)
    autoscaling.install()
    credentials.install()

    moto_app = DomainDispatcherApplication(create_backend_app)
    gate = _Gate()

    def app(environ, start_response):
        if environ.get("PATH_INFO") == HEALTH_PATH:  # cheap liveness check for the CLI (moto's data.json is slow)
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
            return [b"ok\n"]
        with gate:
            try:
                return moto_app(environ, start_response)
            finally:
                if environ.get("REQUEST_METHOD") != "GET":
                    reconciler.wake()  # an API call may have changed an instance (or reset moto)

    api = make_server("127.0.0.1", port, app, threaded=True, request_handler=_QuietHandler)
    listeners = {config.NETWORK_NAME: Imds(reconciler)}  # network name -> its IMDS
    host_apis = {config.NETWORK_NAME: HostApi(app)}  # network name -> the API as its hosts reach it
    listeners_lock = threading.Lock()

    def serve_imds(name, made):  # a region network exists: answer its hosts' IMDS requests, inside it
        with listeners_lock:
            if name in listeners and made:  # its namespace was removed (by hand) and made again: so is the listener
                listeners.pop(name).stop()
                host_apis.pop(name).stop()
            if name not in listeners:
                listeners[name] = Imds(reconciler, network=name).start()
                host_apis[name] = HostApi(app, network=name).start()
                log.info("serving IMDS and the API (port %d) in network %s", config.HOST_API_PORT, name)

    reconciler.on_region_network = serve_imds
    for name in network.region_networks():  # left by the previous daemon (restart) or a crashed one: adopt them
        try:
            reconciler.ensure_region_network(name)
        except LocalcloudError as exc:  # the other networks, and the default one, must still work
            log.error("cannot adopt region network %s: %s", name, exc)
    if restore and paths.saved_state.exists():
        log.info("restored %d reservation(s) from %s", restore_state(paths.saved_state, listeners), paths.saved_state)
    ec2.add_default_group_rules()  # default groups saved by a daemon that did not give them EC2's rule
    listeners[config.NETWORK_NAME].start()
    host_apis[config.NETWORK_NAME].start()
    threading.Thread(target=reconciler.run, name="reconciler", daemon=True).start()
    threading.Thread(target=reconciler.firewall.run, name="security-groups", daemon=True).start()
    log.info("security groups: %s (LOCALCLOUD_SECURITY_GROUPS)", "enforce" if reconciler.firewall.enforce else "off")
    api_thread = threading.Thread(target=api.serve_forever, name="api", daemon=True)
    api_thread.start()

    paths.info.write_text(json.dumps({"pid": os.getpid(), "port": port, "endpoint_url": config.endpoint_url(port),
                                      "host_endpoint_url": config.host_endpoint_url(), "images": image_refs,
                                      "max_hosts": config.max_hosts(),
                                      "security_groups": "enforce" if reconciler.firewall.enforce else "off"}) + "\n")
    paths.pid.write_text("%d\n" % os.getpid())
    log.info("serving EC2 API on %s (hosts: %s), IMDS on %s:%d", config.endpoint_url(port), config.host_endpoint_url(),
             config.IMDS_ADDRESS, config.IMDS_PORT)

    wakeup = threading.Event()
    requests = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (requests.append("stop"), wakeup.set()))
    # SIGUSR1 (`python -m localcloud restart`): save the API's state for the next daemon, leave the hosts running.
    signal.signal(signal.SIGUSR1, lambda *_: (requests.append("save"), wakeup.set()))
    while True:
        wakeup.wait()
        wakeup.clear()
        if "stop" in requests:
            break
        if "save" in requests:
            requests.remove("save")
            # Save while nothing changes (API requests held, reconciler changes locked out); on failure keep serving.
            paths.restart_failed.unlink(missing_ok=True)
            try:
                with gate.closed(), ec2.state_lock(), listeners_lock:
                    dump_state(paths.saved_state, listeners)
            except Exception as exc:  # e.g. a moto service whose state cannot be pickled
                log.exception("cannot save the state for a restart; still serving")
                paths.restart_failed.write_text("%s\n" % exc)
                continue
            log.info("state saved to %s; stopping for a restart", paths.saved_state)
            break
    log.info("stopping")
    api.shutdown()
    reconciler.stop()
    reconciler.firewall.stop()
    with listeners_lock:
        for imds in listeners.values():
            imds.stop()
        for host_api in host_apis.values():
            host_api.stop()
    api.server_close()
    return 0


class _Gate:
    """Holds API requests while the state is saved (the ones in flight finish first)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._open = True
        self._inflight = 0

    def __enter__(self):
        with self._cond:
            while not self._open:
                self._cond.wait()
            self._inflight += 1

    def __exit__(self, *exc):
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def closed(self, timeout=30):
        with self._cond:
            self._open = False
            if not self._cond.wait_for(lambda: self._inflight == 0, timeout=timeout):
                self._open = True
                self._cond.notify_all()
                raise RuntimeError("API requests still running after %d s" % timeout)
        try:
            yield
        finally:
            with self._cond:
                self._open = True
                self._cond.notify_all()
