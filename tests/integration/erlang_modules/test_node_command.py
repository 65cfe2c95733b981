"""The node command (roles/erlang/templates/node_command.sh.j2) against real nodes on loopback.

The template is rendered by Ansible's template module, as the erlang role installs it, with the
suite's private HOME as the service user's home. The commands run against a diskless worker booted
from a boot server (the conftest's release), as the service user itself, and (as root) against nodes
of a second service user (`nobody`) to cover the switch from root, the default node and the refusal
of other users. The cookie must never show up in any process's command line or environment.
"""

import os
import posixpath
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import BOOT_NODE, ROOT, CookieWatch, Nodes, proc_entries
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT

TEMPLATE = os.path.join(ROOT, "roles", "erlang", "templates", "node_command.sh.j2")
HELPERS = os.path.join(ROOT, "roles", "erlang", "tasks", "helpers.yml")
# The directories of root's PATH under sudo (Debian's secure_path).
PROG = posixpath.basename(DEFAULT_LAYOUT["node_command"])
SECURE_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
WORKER = "nodecmd@127.0.0.1"
IS_ROOT = os.geteuid() == 0
OTHER_USER = "nobody"       # the second service user (root-only tests)
STRANGER = "daemon"         # neither root nor a service user


def render(ansible, dest, user, home):
    """The command as the erlang role installs it (ansible.builtin.template, mode 0755)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    extra = {"erlang_user": user, "erlang_home": home, "erlang_dist_port_min": 9100, "erlang_dist_port_max": 9155,
             # As the _common role defines it for the erlang role: the layout moved by erlang_user, erlang_home.
             "erlang_layout": "{{ lookup('skunkworks.erlang_ec2.host_layout') }}"}
    rc, output = ansible.adhoc("ansible.builtin.template", "src=%s dest=%s mode=0755" % (TEMPLATE, dest), extra_vars=extra, timeout=120)
    assert rc == 0, output
    return dest


class Result(object):
    def __init__(self, proc, seconds):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.seconds = seconds

    def __repr__(self):
        return "rc=%s out=%r err=%r (%.2fs)" % (self.rc, self.out, self.err, self.seconds)


def run(command, *args, stdin=None, user=None, timeout=60):
    argv = [command] + list(args)
    if user:
        argv = ["runuser", "-u", user, "--"] + argv
    started = time.monotonic()
    proc = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          encoding="utf-8", timeout=timeout, check=False, cwd="/")
    return Result(proc, time.monotonic() - started)


class ProcPoll(CookieWatch):
    """Polls every process's command line and environment while commands run: records the cookie
    wherever it shows up, and the command's own client nodes (proof that the poll saw them)."""

    interval = 0.01

    def __init__(self, cookie):
        super().__init__(cookie)
        self.clients = set()

    def saw(self, cmdline):
        words = cmdline.split(b"\0")
        if b"-hidden" in words and any(w.startswith(b"erlang-ec2-node-") for w in words):
            self.clients.add(b" ".join(words))


def client_processes(marker):
    """(pid, uid, environ) of the command's client beam processes whose command line holds marker."""
    found = []
    for pid, cmdline, environ in proc_entries():
        words = cmdline.split(b"\0")
        if not (b"-hidden" in words and marker.encode() in words and b"beam" in os.path.basename(words[0])):
            continue
        try:
            with open("/proc/%s/status" % pid) as handle:
                uid = int([line for line in handle if line.startswith("Uid:")][0].split()[1])
        except (OSError, IndexError):
            continue
        found.append((int(pid), uid, dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)))
    return found


def wait_until(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("%s: not within %ss" % (what, seconds))


class Console(object):
    """A process whose stdin is a pipe kept open until close(), its output collected as it comes."""

    def __init__(self, argv, stderr=subprocess.PIPE):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     encoding="utf-8", errors="replace", cwd="/")
        self.out = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for chunk in iter(lambda: self.proc.stdout.read(1), ""):
            self.out += chunk

    def send(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def expect(self, text, seconds=15):
        wait_until(lambda: text in self.out, seconds, "console output %r (got %r)" % (text, self.out))

    def close(self, seconds=15):
        self.proc.stdin.close()
        rc = self.proc.wait(seconds)
        self._reader.join(5)
        return rc, self.out, self.proc.stderr.read() if self.proc.stderr else ""


def remote_console(command, node):
    """remote_console with piped input (not a terminal)."""
    return Console([command, "--node", node, "remote_console"] if node else [command, "remote_console"])


@pytest.fixture(scope="module")
def cluster(env, boot_tree, cookie_watch, boot_server_lock):
    """A boot server and one diskless worker (-loader inet, -mode embedded) for the whole module."""
    nodes = Nodes(env)
    env.switch_current("1.0.0")
    nodes.start_boot_server(allow=["127.0.0.1"])
    worker = nodes.start_worker(WORKER.split("@", maxsplit=1)[0])
    nodes.wait_started(worker, 30)
    yield nodes
    nodes.kill_all()


@pytest.fixture(scope="module")
def command(env, ansible):
    """Rendered with the user running the tests as the service user and the suite's HOME as its home."""
    return render(ansible, os.path.join(env.base, "bin", "erlang-ec2-node"), pwd.getpwuid(os.geteuid()).pw_name, env.home)


@pytest.fixture(autouse=True)
def no_cookie_anywhere(env):
    """Every test: the cookie never in a command line or an environment while it runs."""
    watch = CookieWatch(env.cookie).start()
    yield
    watch.stop()
    assert watch.scans > 0
    assert watch.hits == []


class ServiceUser(object):
    """OTHER_USER as a service user: its own home (0700) with the cluster cookie (0400), outside the
    suite's private directory (which only root may enter), the command rendered for it, its nodes."""

    def __init__(self, env, ansible):
        self.env = env
        account = pwd.getpwnam(OTHER_USER)
        self.uid, self.gid = account.pw_uid, account.pw_gid
        self.base = tempfile.mkdtemp(prefix="erlang-ec2-node-")
        os.chmod(self.base, 0o755)
        self.home = os.path.join(self.base, "home")
        os.mkdir(self.home, 0o700)
        cookie_file = os.path.join(self.home, ".erlang.cookie")
        fd = os.open(cookie_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        os.write(fd, env.cookie.encode())
        os.close(fd)
        os.chown(cookie_file, self.uid, self.gid)
        os.chown(self.home, self.uid, self.gid)
        self.command = render(ansible, os.path.join(self.base, "bin", "erlang-ec2-node"), OTHER_USER, self.home)
        self.procs = {}

    def start_node(self, name):
        """A plain node run by the service user (as a unit would: HOME = its home, -name name@ip)."""
        log = open(os.path.join(self.env.logs, "%s-%s.log" % (OTHER_USER, name)), "wb")
        argv = ["runuser", "-u", OTHER_USER, "--", "env", "HOME=" + self.home, "ERL_CRASH_DUMP_SECONDS=0",
                "erl", "-name", "%s@127.0.0.1" % name, "-noshell", "-noinput"]
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=self.home, start_new_session=True)
        log.close()
        return "%s@127.0.0.1" % name

    def kill(self, name):
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def cleanup(self):
        for name in list(self.procs):
            self.kill(name)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def service_user(env, ansible, cluster):
    if not IS_ROOT:
        pytest.skip("switching users needs root")
    for name in (OTHER_USER, STRANGER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            pytest.skip("no user %s here" % name)
    other = ServiceUser(env, ansible)
    yield other
    other.cleanup()


# ---------------------------------------------------------------- the role installs it


def test_the_role_installs_it_on_path_root_owned_0755():
    with open(HELPERS) as handle:
        helpers = handle.read()
    last = helpers.split("\n- name: ")[-1]
    assert "ansible.builtin.template:" in last
    assert "src: node_command.sh.j2" in last
    assert 'dest: "{{ erlang_layout.node_command }}"' in last
    assert "owner: root" in last and "group: root" in last and 'mode: "0755"' in last
    # The path is the host layout's, in a directory on root's PATH.
    assert posixpath.dirname(DEFAULT_LAYOUT["node_command"]) in SECURE_PATH


def test_rendered_as_the_role_renders_it(command, env):
    assert os.stat(command).st_mode & 0o777 == 0o755
    with open(command) as handle:
        text = handle.read()
    assert text.startswith("#!/bin/sh\n")
    assert "SERVICE_HOME=%s\n" % shlex.quote(env.home) in text
    # The cookie file the command checks is the layout's, moved with erlang_home.
    assert "COOKIE_FILE=%s\n" % shlex.quote(posixpath.join(env.home, posixpath.basename(DEFAULT_LAYOUT["cookie_file"]))) in text
    assert "{%" not in text and "{{" not in text
    assert "-setcookie" not in text
    assert subprocess.run(["sh", "-n", command], check=False).returncode == 0


# ---------------------------------------------------------------- the commands on a diskless worker


def test_ping_says_pong_for_a_live_node_and_pang_for_a_dead_one(command, cluster):
    live = run(command, "--node", WORKER, "ping")
    assert (live.rc, live.out) == (0, "pong\n"), live
    dead = run(command, "--node", "gone@127.0.0.1", "ping")
    assert (dead.rc, dead.out) == (1, "pang\n"), dead
    print("ping: pong %.2fs, pang %.2fs" % (live.seconds, dead.seconds))


def test_ping_of_a_node_that_stops_answering(command, cluster, env):
    nodes = Nodes(env)
    nodes._start("shortlived", ["erl", "-name", "shortlived@127.0.0.1", "-noshell", "-noinput"])
    try:
        nodes.wait_answering("shortlived@127.0.0.1", 15)
        assert run(command, "--node", "shortlived@127.0.0.1", "ping").out == "pong\n"
        nodes.kill("shortlived")
        result = run(command, "--node", "shortlived@127.0.0.1", "ping")
        assert (result.rc, result.out) == (1, "pang\n"), result
    finally:
        nodes.kill_all()


def test_ping_gives_up_at_the_timeout(command, cluster):
    # TEST-NET-2: nothing answers there (or the network is unreachable at once).
    result = run(command, "--node", "w@198.51.100.7", "--timeout", "2", "ping")
    assert (result.rc, result.out) == (1, "pang\n"), result
    assert result.seconds < 2 + 3, result


def test_eval_prints_the_value_of_the_expressions(command, cluster):
    result = run(command, "--node", WORKER, "eval", "node()")
    assert (result.rc, result.out, result.err) == (0, "'%s'\n" % WORKER, ""), result
    result = run(command, "--node", WORKER, "eval", "X = lists:seq(1, 6), lists:sum(X) * 2.")
    assert (result.rc, result.out) == (0, "42\n"), result
    # The running release, from the node itself: it booted from the boot server.
    result = run(command, "--node", WORKER, "eval", "{init:get_argument(loader), application:get_key(hello_cluster, vsn)}")
    assert result.out == '{{ok,[["inet"]]},{ok,"1.0.0"}}\n', result
    # Strings print as the shell prints them (UTF-8 in and out).
    result = run(command, "--node", WORKER, "eval", 'string:uppercase("héllo €")')
    assert result.out == '"HÉLLO €"\n', result
    # What the expressions print on the node comes back too.
    result = run(command, "--node", WORKER, "eval", 'io:format("hello from ~s~n", [node()]), ok')
    assert result.out == "hello from %s\nok\n" % WORKER, result
    print("eval: %.2fs" % result.seconds)


def test_eval_reads_the_expressions_from_stdin(command, cluster):
    result = run(command, "--node", WORKER, "eval", "-", stdin="Node = node(),\n{Node, length([a, b])}.\n")
    assert (result.rc, result.out) == (0, "{'%s',2}\n" % WORKER), result


def test_eval_errors(command, cluster):
    raised = run(command, "--node", WORKER, "eval", "binary_to_atom(42)")
    assert raised.rc == 1 and raised.out == "", raised
    assert "** exception error: bad argument" in raised.err, raised
    thrown = run(command, "--node", WORKER, "eval", "throw(oops)")
    assert thrown.rc == 1 and "exception throw: oops" in thrown.err, thrown
    # Not Erlang: refused before the node is contacted.
    syntax = run(command, "--node", WORKER, "eval", "1 +")
    assert syntax.rc == 2 and "cannot parse the expressions: syntax error" in syntax.err, syntax
    down = run(command, "--node", "gone@127.0.0.1", "eval", "node()")
    assert down.rc == 1 and "node gone@127.0.0.1 does not answer" in down.err, down


def test_eval_gives_up_at_the_timeout(command, cluster, env):
    result = run(command, "--node", WORKER, "--timeout", "1", "eval", "timer:sleep(10000)")
    assert result.rc == 1, result
    assert "no answer from %s within 1 s" % WORKER in result.err
    assert result.seconds < 1 + 3, result


def test_rpc_with_erlang_terms_as_arguments(command, cluster):
    result = run(command, "--node", WORKER, "rpc", "lists", "seq", "1", "5")
    assert (result.rc, result.out) == (0, "[1,2,3,4,5]\n"), result
    # A node name is a quoted atom (the erl_call pitfall: unquoted it is not one term).
    result = run(command, "--node", WORKER, "rpc", "erlang", "atom_to_list", "'w@172.31.0.5'")
    assert result.out == '"w@172.31.0.5"\n', result
    result = run(command, "--node", WORKER, "rpc", "erlang", "element", "2", '{a, "text", <<"bin">>, [1.5]}')
    assert result.out == '"text"\n', result
    result = run(command, "--node", WORKER, "rpc", "maps", "get", "k", "#{k => <<\"v\">>}")
    assert result.out == '<<"v">>\n', result
    result = run(command, "--node", WORKER, "rpc", "erlang", "node")
    assert result.out == "'%s'\n" % WORKER, result
    print("rpc: %.2fs" % result.seconds)


def test_rpc_errors(command, cluster):
    undefined = run(command, "--node", WORKER, "rpc", "lists", "seq", "1")
    assert undefined.rc == 1 and "undefined function lists:seq/1" in undefined.err, undefined
    not_a_term = run(command, "--node", WORKER, "rpc", "erlang", "abs", "foo bar")
    assert not_a_term.rc == 2 and "cannot parse argument 1 (foo bar) (one Erlang term)" in not_a_term.err, not_a_term
    expression = run(command, "--node", WORKER, "rpc", "erlang", "abs", "1 + 2")
    assert expression.rc == 2, expression


def test_pid_is_the_os_pid_of_the_node(command, cluster):
    result = run(command, "--node", WORKER, "pid")
    assert result.rc == 0, result
    assert result.out == cluster.call(WORKER, "list_to_binary(os:getpid())").decode() + "\n"
    # erl execs the emulator: the process the test started is the node.
    assert result.out == "%d\n" % cluster.procs["nodecmd"].pid
    print("pid: %.2fs" % result.seconds)


def test_remote_console_with_piped_input(command, cluster):
    started = time.monotonic()
    result = run(command, "--node", WORKER, "remote_console", stdin="node().\nX = 6 * 7.\nX + 0.\nnodes().\n")
    assert result.rc == 0, result
    assert "(nodecmd@127.0.0.1)1> 'nodecmd@127.0.0.1'" in result.out, result
    assert "(nodecmd@127.0.0.1)3> 42" in result.out, result
    # A hidden console: the worker's visible connections are the cluster's only.
    assert "(nodecmd@127.0.0.1)4> ['%s']" % BOOT_NODE in result.out, result
    # The end of the input ended the console, not the node (a shell that reads eof halts its node).
    assert run(command, "--node", WORKER, "ping").out == "pong\n"
    print("remote_console (piped, 4 lines): %.2fs" % (time.monotonic() - started))


def test_two_consoles_at_once_hidden_with_their_own_names(command, cluster):
    first, second = remote_console(command, WORKER), remote_console(command, WORKER)
    try:
        first.send("node().\n")
        second.send("node().\n")
        first.expect("'%s'" % WORKER)
        second.expect("'%s'" % WORKER)
        hidden = cluster.call(WORKER, "nodes(hidden)")
        consoles = [n for n in hidden if n.startswith("erlang-ec2-node-")]
        assert len(consoles) == 2 and len(set(consoles)) == 2, hidden
        assert [n for n in cluster.call(WORKER, "nodes()") if n.startswith("erlang-ec2-node-")] == []
        assert [n for n in cluster.call(BOOT_NODE, "nodes(connected)") if n.startswith("erlang-ec2-node-")] == []
        # The distribution port range of the cluster.
        registered = subprocess.run(["epmd", "-names"], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
        ports = [int(line.split()[-1]) for line in registered.splitlines()
                 if line.startswith("name ") and line.split()[1] + "@127.0.0.1" in consoles]
        assert len(ports) == 2 and all(9100 <= port <= 9155 for port in ports), (registered, consoles)
        # An error in the console is the shell's, the console goes on.
        first.send("1 = 2.\nok.\n")
        first.expect("exception error: no match of right hand side value 2")
        first.expect("> ok")
    finally:
        rc1, out1, err1 = first.close()
        rc2, out2, err2 = second.close()
    assert (rc1, rc2) == (0, 0), (out1, err1, out2, err2)
    assert run(command, "--node", WORKER, "ping").out == "pong\n"
    assert [n for n in cluster.call(WORKER, "nodes(hidden)") if n.startswith("erlang-ec2-node-")] == []


def test_remote_console_on_a_terminal(command, cluster):
    """A terminal (script's pty): erl's own remote shell (-remsh), left with ^G q."""
    if shutil.which("script") is None:
        pytest.skip("no script(1)")
    line = "%s --node %s remote_console" % (shlex.quote(command), WORKER)
    console = Console(["script", "-qec", line, "/dev/null"], stderr=subprocess.STDOUT)
    try:
        console.expect("(nodecmd@127.0.0.1)1> ")
        console.send("node().\r")
        console.expect("'nodecmd@127.0.0.1'")
        assert len([n for n in cluster.call(WORKER, "nodes(hidden)") if n.startswith("erlang-ec2-node-")]) == 1
        console.send("\x07")
        console.expect("-->")
        console.send("q\r")
        assert console.proc.wait(15) == 0, console.out
    finally:
        if console.proc.poll() is None:
            console.proc.kill()
    assert run(command, "--node", WORKER, "ping").out == "pong\n"


def test_remote_console_of_a_node_that_does_not_answer(command, cluster):
    result = run(command, "--node", "gone@127.0.0.1", "remote_console", stdin="node().\n")
    assert result.rc == 1 and "node gone@127.0.0.1 does not answer" in result.err, result


def test_the_cookie_never_shows_in_any_process(command, cluster, env):
    """Every command while /proc is polled: the client nodes are seen, the cookie never."""
    with ProcPoll(env.cookie) as poll:
        assert run(command, "--node", WORKER, "eval", "timer:sleep(1000), ok").out == "ok\n"
        assert run(command, "--node", WORKER, "rpc", "timer", "sleep", "300").out == "ok\n"
        assert run(command, "--node", WORKER, "pid").rc == 0
        assert run(command, "--node", WORKER, "ping").out == "pong\n"
        assert run(command, "--node", WORKER, "remote_console", stdin="timer:sleep(500).\n").rc == 0
    assert poll.hits == []
    actions = {client.split(b" -extra ")[1].split(b" ")[0] for client in poll.clients}
    assert {b"eval", b"rpc", b"remote_console"} <= actions, poll.clients
    for client in poll.clients:
        assert b"-setcookie" not in client and b"-c" not in client.split(b" ")


def test_usage_errors(command):
    for args, message in [((), "no command given"),
                          (("start",), "unknown command start"),
                          (("--node", "not a node", "ping"), "--node must be name@host"),
                          (("--timeout", "soon", "ping"), "--timeout must be a whole number"),
                          (("--timeout", "0", "ping"), "at least 1 second"),
                          (("eval",), "eval takes one argument"),
                          (("rpc", "erlang"), "rpc needs MOD FUN"),
                          (("--frobnicate", "ping"), "unknown option --frobnicate")]:
        result = run(command, *args)
        assert result.rc == 2 and message in result.err, (args, result)
    result = run(command, "--help")
    assert result.rc == 0 and result.out.startswith("usage: " + PROG) and "rpc MOD FUN [ARG ...]" in result.out


def test_a_cookie_file_others_can_read_is_refused(ansible, env, command):
    home = tempfile.mkdtemp(dir=env.base, prefix="loose-home-")
    cookie_file = os.path.join(home, ".erlang.cookie")
    with open(cookie_file, "w") as handle:
        handle.write("not-the-cluster-cookie")
    os.chmod(cookie_file, 0o644)
    loose = render(ansible, os.path.join(home, "bin", "erlang-ec2-node"), pwd.getpwuid(os.geteuid()).pw_name, home)
    result = run(loose, "--node", WORKER, "ping")
    assert result.rc == 2 and "has mode 644" in result.err and "chmod 0400" in result.err, result
    shutil.rmtree(home)


# ---------------------------------------------------------------- users and the default node (as root)


def test_root_switches_to_the_service_user(service_user, cluster):
    command = service_user.command
    result = run(command, "--node", WORKER, "eval", "node()")
    assert (result.rc, result.out) == (0, "'%s'\n" % WORKER), result
    console = remote_console(command, WORKER)
    try:
        console.send("node().\n")
        console.expect("'%s'" % WORKER)
        clients = wait_until(lambda: client_processes("remote_console"), 10, "the console's client process")
        assert [(uid, environ.get(b"HOME")) for dummy, uid, environ in clients] == [(service_user.uid, service_user.home.encode())]
    finally:
        rc, out, err = console.close()
    assert rc == 0, (out, err)


def test_the_service_user_runs_it_directly_and_others_are_refused(service_user, cluster):
    command = service_user.command
    result = run(command, "--node", WORKER, "ping", user=OTHER_USER)
    assert (result.rc, result.out) == (0, "pong\n"), result
    refused = run(command, "--node", WORKER, "ping", user=STRANGER)
    assert refused.rc == 2 and refused.out == "", refused
    assert "run it as root (sudo " + PROG + " ...) or as the service user %s, not as %s" % (OTHER_USER, STRANGER) in refused.err
    # --help needs no privilege.
    assert run(command, "--help", user=STRANGER).rc == 0


def test_default_node_is_the_one_node_of_the_service_user(service_user, cluster):
    command = service_user.command
    # Only nodes of other users run (the suite's nodes are root's): nothing to talk to.
    none = run(command, "ping")
    assert (none.rc, none.out) == (1, "pang\n"), none
    assert "no Erlang node of %s runs on this host" % OTHER_USER in none.err
    assert run(command, "eval", "node()").rc == 1
    node = service_user.start_node("ncdefault")
    cluster.wait_answering(node, 15)
    result = run(command, "eval", "node()")
    assert (result.rc, result.out) == (0, "'%s'\n" % node), result
    assert run(command, "ping").out == "pong\n"
    assert run(command, "--node", "ncdefault", "pid").out == cluster.call(node, "list_to_binary(os:getpid())").decode() + "\n"
    print("default node lookup + eval: %.2fs" % result.seconds)
    # A console of the service user (a hidden node) does not count as a second node.
    console = remote_console(command, None)
    try:
        console.send("node().\n")
        console.expect("'%s'" % node)
        assert run(command, "eval", "node()").out == "'%s'\n" % node
    finally:
        assert console.close()[0] == 0
    # Two nodes: the command does not guess.
    other = service_user.start_node("ncother")
    cluster.wait_answering(other, 15)
    several = run(command, "ping")
    assert several.rc == 2 and node in several.err and other in several.err and "--node" in several.err, several
    assert run(command, "--node", "ncother", "eval", "node()").out == "'%s'\n" % other
    service_user.kill("ncother")
    service_user.kill("ncdefault")
    wait_until(lambda: run(command, "ping").rc == 1, 10, "ping after the node stopped")
    gone = run(command, "ping")
    assert (gone.rc, gone.out) == (1, "pang\n"), gone
