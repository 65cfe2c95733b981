"""Real Erlang nodes on loopback for the Erlang control modules, driven through Ansible.

A boot server node (`erl_boot_server`) serves the example application hello_cluster
(examples/hello_cluster, releases 1.0.0, 2.0.0 and a 3.0.0 CRASH build) to diskless workers
(`-loader inet -hosts 127.0.0.1`). The cookie lives only in a private HOME's .erlang.cookie.
Only one boot server can run per host (UDP 4368): run this suite serially.
"""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
COLLECTIONS = os.path.join(ROOT, ".collections")
sys.path.insert(0, COLLECTIONS)

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_node  # noqa: E402
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT  # noqa: E402

# The allow-list file's name, as the layout names it (these boot servers keep theirs in a temporary directory).
ALLOW_LIST_NAME = os.path.basename(DEFAULT_LAYOUT["allow_list_file"])

import local_erl  # noqa: E402
import playbook_runner  # noqa: E402

EXAMPLE = os.path.join(ROOT, "examples", "hello_cluster")
INTERPRETER = {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}
BOOT_NODE = "boot@127.0.0.1"
OTP_LIB = subprocess.run(
    ["erl", "-noshell", "-eval", "io:format(\"~s\", [code:lib_dir()]), halt()."],
    stdout=subprocess.PIPE, check=True, universal_newlines=True,
).stdout
VERSIONS = {"1.0.0": {}, "2.0.0": {}, "3.0.0": {"CRASH": "1"}}


def run_command(argv, data, environ_update):
    """The ErlangNode runner for the tests (modules use AnsibleModule.run_command)."""
    environ = dict(os.environ)
    environ.update(environ_update)
    proc = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, timeout=60, check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


# One boot server per host (UDP 4368): suites that start one take this lock for their session.
BOOT_SERVER_UDP_PORT = 4368


def udp_4368_free():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("0.0.0.0", BOOT_SERVER_UDP_PORT))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def wait_udp_4368_free(bound=120):
    deadline = time.monotonic() + bound
    while not udp_4368_free():
        if time.monotonic() > deadline:
            raise AssertionError("UDP 4368 is held by another process (another boot server on this host) for %d s" % bound)
        time.sleep(1)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_entries():
    """(pid, command line, environment) of every process readable now, raw bytes."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmdline = handle.read()
            with open("/proc/%s/environ" % pid, "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        yield pid, cmdline, environ


class CookieWatch(object):
    """Scans every process's command line and environment while the suite (or a `with` block) runs;
    the cookie must never be there."""

    interval = 0.05

    def __init__(self, cookie):
        self.needle = cookie.encode()
        self.hits = []
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self):
        while not self._stop.is_set():
            for pid, cmdline, environ in proc_entries():
                if self.needle in cmdline or self.needle in environ:
                    self.hits.append((pid, cmdline.replace(b"\0", b" ")[:300]))
                self.saw(cmdline)
            self.scans += 1
            self._stop.wait(self.interval)

    def saw(self, cmdline):
        """Called with every command line scanned (raw bytes, NUL-separated): for subclasses."""

    def stop(self):
        self._stop.set()
        self._thread.join(5)


class Env(object):
    """The suite's private HOME (cookie), boot tree and logs."""

    def __init__(self, base):
        self.base = base
        self.cookie, self.home, self.cookie_file = local_erl.private_cookie_home(base)
        self.boot_root = os.path.join(base, "srv")
        self.logs = os.path.join(base, "logs")
        os.makedirs(self.logs)
        self.ansible_log = os.path.join(self.logs, "ansible.log")
        # Modules' temporary files (the private cookie HOMEs) land here: checked empty at the end.
        self.module_tmp = os.path.join(base, "module-tmp")
        os.makedirs(self.module_tmp)
        self.outputs = []          # every Ansible run's stdout+stderr, scanned for the cookie

    def node_env(self):
        env = dict(os.environ)
        env["HOME"] = self.home
        env["ERL_CRASH_DUMP_SECONDS"] = "0"   # a crashing release writes no dump
        return env

    def release_dir(self, vsn):
        return os.path.join(self.boot_root, "releases", vsn)

    def switch_current(self, vsn):
        """Atomic switch of the served release (rename of a new symlink), as the roles do."""
        link = os.path.join(self.boot_root, "current")
        tmp = link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self.release_dir(vsn), tmp)
        os.replace(tmp, link)


class Ansible(object):
    def __init__(self, env):
        self.env = env

    def _environ(self):
        return playbook_runner.ansible_env(
            ANSIBLE_LOG_PATH=self.env.ansible_log,
            ANSIBLE_HOST_KEY_CHECKING="False",
            ANSIBLE_LOCALHOST_WARNING="False",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
            TMPDIR=self.env.module_tmp,
        )

    def run(self, module, args, check=False, diff=False, verbosity=0, callback="ansible.posix.json", extra_vars=None):
        """Run one module in a one-task playbook on localhost; returns (rc, result, output).

        Arguments go in the playbook file (never on a command line: they may hold the cookie).
        """
        workdir = tempfile.mkdtemp(dir=self.env.base, prefix="play-")
        task = {"name": "run", "skunkworks.erlang_ec2." + module: args, "register": "result"}
        play = [{"hosts": "localhost", "gather_facts": False, "vars": dict(extra_vars or {}), "tasks": [task]}]
        playbook = playbook_runner.write_play(os.path.join(workdir, "play.yml"), play)
        environ = self._environ()
        environ["ANSIBLE_STDOUT_CALLBACK"] = callback
        proc = playbook_runner.run_playbook(playbook, "-c", "local", inventory="localhost,", check_mode=check, diff=diff,
                                            verbosity=verbosity, extra_vars=INTERPRETER, env=environ, timeout=300,
                                            merge_stderr=True)
        shutil.rmtree(workdir, ignore_errors=True)
        self.env.outputs.append(proc.stdout)
        if callback != "ansible.posix.json":
            return proc.returncode, None, proc.stdout
        start = proc.stdout.find("{")
        data = json.loads(proc.stdout[start:])
        result = data["plays"][0]["tasks"][0]["hosts"]["localhost"]
        return proc.returncode, result, proc.stdout

    def adhoc(self, module, args, verbosity=0, timeout=300, extra_vars=None):
        """The documented quick-start form: ansible localhost -m MODULE -a 'k=v ...' (no secrets in args nor
        extra_vars); MODULE is short for skunkworks.erlang_ec2.MODULE unless it has dots. Returns (rc, output)."""
        fqcn = module if "." in module else "skunkworks.erlang_ec2." + module
        proc = playbook_runner.run_adhoc("localhost", fqcn, args, "-c", "local", extra_vars=dict(extra_vars or {}, **INTERPRETER),
                                         verbosity=verbosity, env=self._environ(), timeout=timeout, merge_stderr=True)
        self.env.outputs.append(proc.stdout)
        return proc.returncode, proc.stdout


BOOT_SERVER_MODULES = ("erlang_ec2_boot_server", "erlang_ec2_loader_server", "erlang_ec2_local_files")
_EBIN = []


def boot_server_ebin():
    """The boot server role's Erlang modules, compiled once per session (-Werror) into a private directory."""
    if not _EBIN:
        out = tempfile.mkdtemp(prefix="boot-server-ebin-")
        sources = [os.path.join(ROOT, "roles", "boot_server", "files", m + ".erl") for m in BOOT_SERVER_MODULES]
        subprocess.run(["erlc", "-Werror", "-o", out] + sources, check=True)
        _EBIN.append(out)
    return _EBIN[0]


class Nodes(object):
    """Erlang nodes started by one test; all SIGKILLed at teardown (a VM stuck in the loader ignores SIGTERM)."""

    def __init__(self, env):
        self.env = env
        self.procs = {}
        self.log_files = []

    def _start(self, name, argv):
        log_path = os.path.join(self.env.logs, "%s-%d.log" % (name, len(self.log_files)))
        self.log_files.append(log_path)
        log = open(log_path, "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self.env.node_env(), cwd=self.env.base)
        log.close()
        self.procs[name] = proc
        return proc

    def start_boot_server(self, allow=()):
        """The boot server as the boot_server role runs it (erlang_ec2_boot_server on an allow-list file,
        serving only the suite's release tree and the OTP root), allowing `allow`."""
        slaves = os.path.join(self.env.base, ALLOW_LIST_NAME)
        with open(slaves, "w") as handle:
            handle.write("".join("%s\n" % a for a in allow))
        if os.path.exists(slaves + ".joined"):
            os.unlink(slaves + ".joined")
        # A failed start (e.g. eaddrinuse on UDP 4368) ends the VM instead of leaving a node without a boot server.
        argv = ["erl", "-name", BOOT_NODE, "-noshell", "-noinput", "-pa", boot_server_ebin(),
                "-erlang_ec2_root", self.env.boot_root, "-erlang_ec2_root", boot_server_ebin(),
                "-s", "erlang_ec2_boot_server", "start", slaves]
        if erlang_node.epmd_lookup("127.0.0.1", "boot") if self._epmd_up() else False:
            raise AssertionError("a node named boot@127.0.0.1 already runs here (another boot server holds UDP 4368?)")
        wait_udp_4368_free()
        proc = self._start("boot", argv)
        try:
            # The node answers before its -eval has started the boot server.
            self.wait_for(BOOT_NODE, "is_pid(whereis(boot_server))", 15)
        except AssertionError:
            raise AssertionError("the boot server did not start: %s" % self.logs_text()[-1000:])
        return proc

    @staticmethod
    def _epmd_up():
        try:
            erlang_node.epmd_lookup("127.0.0.1", "boot", timeout=1)
            return True
        except OSError:
            return False

    def start_worker(self, name, http_port=None):
        node = "%s@127.0.0.1" % name
        current = os.path.join(self.env.boot_root, "current")
        argv = ["erl", "-name", node, "-noshell", "-noinput", "-loader", "inet", "-hosts", "127.0.0.1",
                "-boot", os.path.join(current, "hello_cluster"), "-config", os.path.join(current, "sys"),
                "-mode", "embedded", "-shutdown_time", "300",
                "-hello_cluster", "http_port", str(http_port or free_port())]
        self._start(name, argv)
        return node

    def client(self, node):
        return erlang_node.ErlangNode(node, run_command, cookie_file=self.env.cookie_file, timeout=3)

    def answers(self, node):
        try:
            with self.client(node) as client:
                client.call("ok")
            return True
        except erlang_node.ErlangNodeError:
            return False

    def wait_answering(self, node, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.answers(node):
                return
            time.sleep(0.1)
        raise AssertionError("node %s did not answer within %ss" % (node, seconds))

    def wait_for(self, node, body, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with self.client(node) as client:
                    if client.call(body) is True:
                        return
            except erlang_node.ErlangNodeError:
                pass
            time.sleep(0.1)
        raise AssertionError("node %s: %s not true within %ss" % (node, body, seconds))

    def wait_started(self, node, seconds):
        """Answering and init finished (applications started)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with self.client(node) as client:
                    if client.call("element(1, init:get_status())") == "started":
                        return
            except erlang_node.ErlangNodeError:
                pass
            time.sleep(0.1)
        raise AssertionError("node %s did not finish starting within %ss" % (node, seconds))

    def call(self, node, body):
        with self.client(node) as client:
            return client.call(body)

    def kill(self, name):
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def kill_all(self):
        for name in list(self.procs):
            self.kill(name)

    def logs_text(self):
        text = ""
        for path in self.log_files:
            with open(path, "rb") as handle:
                text += handle.read().decode("utf-8", "replace")
        return text


@pytest.fixture(scope="session")
def boot_server_lock():
    """Serialises suites that run a boot server on this host (they use the same lock file)."""
    with local_erl.boot_server_lock():
        yield


@pytest.fixture(scope="session")
def env():
    base = tempfile.mkdtemp(prefix="erlang-modules-")
    os.chmod(base, 0o700)
    environment = Env(base)
    yield environment
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def cookie_watch(env):
    watch = CookieWatch(env.cookie).start()
    yield watch
    watch.stop()


@pytest.fixture(scope="session")
def ansible(env):
    return Ansible(env)


@pytest.fixture(scope="session", autouse=True)
def cookie_never_leaked(env, cookie_watch):
    """At the session's end, whatever order the tests ran in: the cookie was never on a command line nor in
    Ansible's output (test_erlmod_secrets.py checks the same, and more, while the session runs)."""
    yield
    cookie_watch.stop()
    assert cookie_watch.hits == [], "the cookie was on a command line: %r" % cookie_watch.hits[:3]
    assert not [output for output in env.outputs if env.cookie in output], "the cookie was in Ansible's output"


@pytest.fixture(scope="session")
def boot_tree(env, ansible, cookie_watch):
    """releases/<vsn>/ for 1.0.0, 2.0.0, 3.0.0 (crashes at start), boot files built by the boot_script module."""
    for vsn, extra in VERSIONS.items():
        out = env.release_dir(vsn)
        argv = ["make", "-s", "-C", EXAMPLE, "release", "VSN=" + vsn, "OUT=" + out, "SYNC_NODES=" + BOOT_NODE]
        argv += ["%s=%s" % item for item in extra.items()]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        shutil.copy(os.path.join(out, "releases", vsn, "sys.config"), os.path.join(out, "sys.config"))
        rc, result, output = ansible.run("boot_script", {
            "rel_file": os.path.join(out, "releases", vsn, "hello_cluster.rel"),
            "lib_dirs": [os.path.join(out, "lib"), OTP_LIB],
            "outdir": out,
        })
        assert rc == 0 and result["changed"], output
    env.switch_current("1.0.0")
    return env.boot_root


@pytest.fixture
def nodes(env, boot_tree, cookie_watch, boot_server_lock):
    manager = Nodes(env)
    env.switch_current("1.0.0")
    yield manager
    manager.kill_all()


@pytest.fixture
def boot_server(nodes):
    """A boot server allowing 127.0.0.1 (workers on loopback)."""
    nodes.start_boot_server(allow=["127.0.0.1"])
    return BOOT_NODE


@pytest.fixture(scope="session")
def node_args(env):
    """Module arguments naming a node and the suite's cookie file."""
    def make(node, **extra):
        args = {"node": node, "cookie_file": env.cookie_file, "timeout": 5}
        args.update(extra)
        return args
    return make
