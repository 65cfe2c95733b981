"""TLS distribution (docs/tls.md) with real erl nodes on loopback: certificates issued by the erlang role's own
tasks (roles/erlang/tasks/tls.yml, run through ansible-playbook), nodes started as the worker/boot-server units
start them (-proto_dist inet_tls -ssl_dist_optfile), called through module_utils/erlang_node.py."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, ".collections"))

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_node  # noqa: E402

import local_erl  # noqa: E402
import playbook_runner  # noqa: E402

HOST = "127.0.0.1"
# Every node name carries this run's tag: epmd on 127.0.0.1 is shared by every run on the machine, and a fixed
# name ('a') let one run's calls reach another run's (or a leftover) node, with another CA and cookie.
RUN = uuid.uuid4().hex[:8]


def name_of(name):
    """The node name (before '@') this run uses for the test's short name."""
    return "%s-%s" % (name, RUN)


def node_of(name):
    return "%s@%s" % (name_of(name), HOST)


INTERPRETER = {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}


def run_command(argv, data, environ_update):
    environ = dict(os.environ)
    environ.update(environ_update)
    proc = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, timeout=60, check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


class Tls(object):
    """A private base directory: the cookie HOME, CAs, node TLS directories, Ansible's output."""

    def __init__(self, base):
        self.base = base
        self.cookie, self.home, self.cookie_file = local_erl.private_cookie_home(base)
        self.outputs = []

    def ca_dir(self, ca):
        return os.path.join(self.base, "ca-" + ca)

    def node_dir(self, name):
        return os.path.join(self.base, "tls-" + name)

    def optfile(self, name):
        return os.path.join(self.node_dir(name), "ssl_dist.conf")

    def issue(self, name, ca="cluster", extra_vars=None, check=False, env=None, verbosity=0):
        """The role's tls tasks for node name@127.0.0.1, its files in node_dir(name), the CA in ca_dir(ca);
        `env` adds to ansible-playbook's environment (an AWS endpoint)."""
        play_vars = {
            "erlang_distribution": "tls",
            "erlang_cluster": "tls-test",
            "erlang_tls_ca_dir": self.ca_dir(ca),
            "erlang_tls_dir": self.node_dir(name),
            "erlang_tls_node_ip": HOST,
            "erlang_node": node_of(name),
            "erlang_layout": {"user": "root", "group": "root"},
        }
        play_vars.update(extra_vars or {})
        play = [{"hosts": "localhost", "gather_facts": False, "vars": play_vars, "tasks": [
            {"name": "TLS material", "ansible.builtin.include_role": {"name": "skunkworks.erlang_ec2.erlang", "tasks_from": "tls"}},
        ]}]
        workdir = tempfile.mkdtemp(dir=self.base, prefix="play-")
        playbook = playbook_runner.write_play(os.path.join(workdir, "play.yml"), play)
        env = playbook_runner.ansible_env(ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_LOCALHOST_WARNING="False",
                                          ANSIBLE_INVENTORY_UNPARSED_WARNING="False", **(env or {}))
        proc = playbook_runner.run_playbook(playbook, "-c", "local", inventory="localhost,", extra_vars=INTERPRETER,
                                            check_mode=check, env=env, timeout=300, merge_stderr=True, verbosity=verbosity)
        shutil.rmtree(workdir, ignore_errors=True)
        self.outputs.append(proc.stdout)
        return proc


class Nodes(object):
    def __init__(self, tls):
        self.tls = tls
        self.procs = {}

    def start(self, name, optfile=None, tls=True):
        node = node_of(name)
        # The same name killed by the previous test: epmd drops it once it sees the connection close.
        deadline = time.monotonic() + 5
        while self.registered(name):
            if time.monotonic() > deadline:
                raise AssertionError("node %s is already registered with epmd (left over by this run?)" % node)
            time.sleep(0.1)
        argv = ["erl", "-name", node, "-noshell", "-noinput"]
        if tls:
            argv += ["-proto_dist", "inet_tls", "-ssl_dist_optfile", optfile or self.tls.optfile(name)]
        env = dict(os.environ, HOME=self.tls.home, ERL_CRASH_DUMP_SECONDS="0")
        log = open(os.path.join(self.tls.base, name + ".log"), "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.procs[name].poll() is None:
            if self.registered(name):
                return node
            time.sleep(0.1)
        with open(os.path.join(self.tls.base, name + ".log"), "rb") as handle:
            raise AssertionError("node %s did not register with epmd (exit %s): %s"
                                 % (node, self.procs[name].poll(), handle.read()[-2000:].decode("utf-8", "replace")))

    @staticmethod
    def registered(name):
        try:
            return erlang_node.epmd_lookup(HOST, name_of(name))
        except OSError:         # no epmd yet: the first node starts it
            return False

    def client(self, node, optfile, **extra):
        return erlang_node.ErlangNode(node, run_command, cookie_file=self.tls.cookie_file, timeout=5,
                                      distribution="tls", ssl_dist_optfile=optfile, **extra)

    def call(self, node, body, optfile):
        with self.client(node, optfile) as client:
            return client.call(body)

    def stop_all(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()


@pytest.fixture(scope="session")
def tls():
    base = tempfile.mkdtemp(prefix="erlang-tls-")
    os.chmod(base, 0o700)
    yield Tls(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def issued(tls):
    """Nodes a and b from the cluster's CA, x from another CA (role-made too)."""
    for name, ca in (("a", "cluster"), ("b", "cluster"), ("x", "other")):
        proc = tls.issue(name, ca)
        assert proc.rc == 0, proc.tail()
    return tls


@pytest.fixture
def nodes(issued):
    manager = Nodes(issued)
    yield manager
    manager.stop_all()


def node_info_play(tls, node, optfile, name="info"):
    """The node_info module through ansible-playbook on localhost with distribution tls and `optfile`: (the run, the
    task's result). The output is kept in tls.outputs (checked for keys and cookies)."""
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [{"name": "info", "skunkworks.erlang_ec2.node_info": {
        "node": node, "cookie_file": tls.cookie_file, "distribution": "tls", "ssl_dist_optfile": optfile}}]}]
    path = playbook_runner.write_play(os.path.join(tls.base, name + ".yml"), play)
    env = playbook_runner.ansible_env(ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
                                      ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = playbook_runner.run_playbook(path, "-c", "local", inventory="localhost,",
                                        extra_vars={"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                                        env=env, timeout=300, merge_stderr=True)
    tls.outputs.append(proc.stdout)
    assert proc.rc == 0, proc.tail()
    return proc, json.loads(proc.out[proc.out.find("{"):])["plays"][0]["tasks"][0]["hosts"]["localhost"]
