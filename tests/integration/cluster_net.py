"""Network namespaces for multi-node tests: a private bridge with K nodes, and
helpers to run etcd (EtcdCluster) and cluster-mode sluiced (SluicedNode,
wait_for_leader) on them.

    with NetnsCluster(3) as net:            # nodes 1..3, node i at 10.x.y.i
        with EtcdCluster(net) as etcd:      # one etcd member per node
            etcd.wait_healthy(10)
            net.cut(3)                      # node 3's bridge port down
            ...
            net.heal(3)

Nodes are numbered 1..K everywhere (node i has address 10.x.y.i; the host
side of the bridge is 10.x.y.254, so the test process itself reaches every
node).  Each NetnsCluster gets its own bridge `slbr<N>`, namespaces
`sl<N>n<i>` and veths `sl<N>h<i>` (host side) / `eth0` (inside), where
N = "<pid>c<k>", and a /24 in 10.200-250.x.0 picked from the pid and checked
against the host's routes, so parallel runs do not collide.  Leftovers of
dead runs (their pid is gone) are removed when a new cluster starts.

Everything started with `run()` is in its own process group, gets SIGKILL if
the test process dies (setpriv --pdeathsig; it fires when the *thread* that
called run() exits, so call run() from the main thread), and is killed when
the cluster exits, which also deletes the namespaces, veths, bridge and any
iptables rule it added -- even when the test fails or is interrupted
(SIGTERM is turned into KeyboardInterrupt while a cluster is up).

Needs root, iproute2 and the bridge/veth drivers (see can_use_netns());
partition() also needs nftables.  Use require_netns() in tests: it skips
when netns cannot be used, except under CI (env CI set), where it fails, so
a missing install step cannot pass unnoticed.
"""

import base64
import contextlib
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

CLONE_NEWNET = 0x40000000
HOST_OCTET = 254               # the bridge's own address on the host side
CONNECT_CHECK_TIMEOUT = 3.0    # seconds for the set-up connectivity check

_counter = 0                   # clusters made by this process (names)
_counter_lock = threading.Lock()

# names this module makes (group 1: the pid): namespaces sl<pid>c<k>n<i>,
# bridges slbr<pid>c<k>, veths sl<pid>c<k>h<i>, can_use_netns()'s sl<pid>probe
_NAME_RE = re.compile(r"^sl(?:br)?(\d+)(?:c\d+(?:n\d+|h\d+)?|probe)$")
_BRIDGE_RE = re.compile(r"slbr(\d+)c(\d+)")


class NetnsError(RuntimeError):
    """Setting up or changing the test network failed (message says why)."""


# --------------------------------------------------------------------------
# small utilities

def wait_until(cond, timeout, what, interval=0.05):
    """Poll cond() until truthy and return its value; AssertionError naming
    `what` after `timeout` seconds.  (conftest.wait_for without the import,
    so this module also works outside pytest.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def _cmd(argv, check=True, timeout=20, input=None):
    """Run a short command; return (rc, stdout, stderr) as text."""
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL if input is None else None,
                           input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise NetnsError("%s is not installed" % argv[0])
    if check and p.returncode != 0:
        raise NetnsError("%s failed (exit %d): %s"
                         % (" ".join(argv), p.returncode, (p.stderr or p.stdout).strip()))
    return p.returncode, p.stdout, p.stderr


def _ip(*args, check=True):
    return _cmd(["ip"] + list(args), check=check)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_libc = None


def in_netns(ns_name, fn):
    """Call fn() on a short-lived thread that has joined network namespace
    ns_name, and return its result.  Sockets created there stay in that
    namespace and can be used from any thread afterwards."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    out = {}

    def body():
        try:
            fd = os.open("/run/netns/" + ns_name, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, "setns(%s): %s" % (ns_name, os.strerror(e)))
            finally:
                os.close(fd)
            out["value"] = fn()
        except BaseException as e:          # re-raised on the caller's thread
            out["error"] = e

    t = threading.Thread(target=body, name="netns-" + ns_name, daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def connect_from(ns_name, host, port, timeout):
    """A TCP socket connected to host:port from inside namespace ns_name (or
    from the host's namespace if ns_name is None)."""
    if ns_name is None:
        return socket.create_connection((host, port), timeout=timeout)
    s = in_netns(ns_name, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        return s
    except BaseException:
        s.close()
        raise


class _HTTPConnection(http.client.HTTPConnection):
    """http.client over a socket made in a given namespace."""

    def __init__(self, ns_name, host, port, timeout):
        super().__init__(host, port, timeout=timeout)
        self._ns_name = ns_name

    def connect(self):
        self.sock = connect_from(self._ns_name, self.host, self.port, self.timeout)


def http_request(host, port, method, path, body=None, timeout=5.0, ns_name=None,
                 headers=None):
    """One HTTP/1.1 request (from namespace ns_name, or the host); returns
    (status, parsed JSON or raw bytes).  Raises OSError (incl. timeouts) when
    the server cannot be reached or does not answer in time."""
    h = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    conn = _HTTPConnection(ns_name, host, port, timeout)
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        raw = r.read()
    except http.client.HTTPException as e:
        raise OSError("HTTP %s %s:%d%s: %r" % (method, host, port, path, e))
    finally:
        conn.close()
    try:
        return r.status, json.loads(raw) if raw else None
    except ValueError:
        return r.status, raw


def log_tail(path, lines=40):
    if not path or not os.path.exists(path):
        return "(no log)"
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        text = f.read().decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


# --------------------------------------------------------------------------
# can we?

_usable = None


def can_use_netns():
    """(True, "") if this process can build namespaces, veths and bridges;
    otherwise (False, why).  Checked once by really making (and removing) a
    namespace and a bridge."""
    global _usable
    if _usable is not None:
        return _usable
    if not sys.platform.startswith("linux"):
        _usable = (False, "network namespaces need Linux")
    elif os.geteuid() != 0:
        _usable = (False, "network namespaces need root (running as uid %d)" % os.geteuid())
    elif shutil.which("ip") is None:
        _usable = (False, "`ip` (iproute2) is not installed")
    elif shutil.which("setpriv") is None:
        _usable = (False, "`setpriv` (util-linux) is not installed")
    else:
        probe = "sl%dprobe" % os.getpid()
        try:
            _ip("netns", "add", probe)
            try:
                _ip("link", "add", probe, "type", "bridge")
                _ip("link", "del", probe)
                _ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
            finally:
                _ip("netns", "del", probe, check=False)
            _usable = (True, "")
        except NetnsError as e:
            _usable = (False, "cannot make namespaces/bridges/veths here: %s" % e)
    return _usable


def require_netns(need_etcd=False, need_nft=False):
    """In a test: skip if netns (or etcd, or nft) cannot be used here --
    unless env CI is set, then fail: CI must have everything installed."""
    import pytest
    ok, why = can_use_netns()
    if ok and need_etcd and not os.access(EtcdCluster.EXE, os.X_OK):
        ok, why = False, "%s is missing (apt-get install etcd-server etcd-client)" % EtcdCluster.EXE
    if ok and need_nft and shutil.which("nft") is None:
        ok, why = False, "nft is missing (apt-get install nftables)"
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail("CI is set, so this must run: " + why, pytrace=False)
    pytest.skip(why)


# --------------------------------------------------------------------------
# leftovers

def cleanup_leftovers():
    """Remove namespaces, links and iptables rules of NetnsClusters whose
    process is gone (a SIGKILLed pytest cannot clean up after itself).
    Returns the names removed."""
    removed = []
    dead = lambda pid: pid != os.getpid() and not _pid_alive(pid)
    _, out, _ = _ip("netns", "list", check=False)
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME_RE.match(name)
        if m and dead(int(m.group(1))):
            _kill_netns_pids(name)
            _ip("netns", "del", name, check=False)
            removed.append(name)
    _, out, _ = _ip("-o", "link", "show", check=False)
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = _NAME_RE.match(name)
        if m and dead(int(m.group(1))):
            _ip("link", "del", name, check=False)
            removed.append(name)
    if shutil.which("iptables"):
        rc, out, _ = _cmd(["iptables", "-S", "FORWARD"], check=False)
        for line in out.splitlines() if rc == 0 else ():
            m = _BRIDGE_RE.search(line)
            if m and line.startswith("-A ") and dead(int(m.group(1))):
                _cmd(["iptables", "-D"] + line.split()[1:], check=False)
                removed.append("iptables: " + line)
    return removed


def _kill_netns_pids(ns_name):
    _, out, _ = _ip("netns", "pids", ns_name, check=False)
    pids = [int(p) for p in out.split() if p.isdigit()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


# --------------------------------------------------------------------------
# the network

class NetnsCluster:
    """K network namespaces on one private bridge (context manager)."""

    def __init__(self, nodes=3, workdir=None):
        if not 1 <= nodes <= 9:
            raise ValueError("1..9 nodes (interface names must fit in 15 characters)")
        self.nodes = nodes
        global _counter
        with _counter_lock:
            k = _counter
            _counter += 1
        self.tag = "%dc%d" % (os.getpid(), k % 100)
        self.bridge = "slbr" + self.tag
        self.subnet = None             # "10.x.y" once up
        self.workdir = workdir
        self._own_workdir = workdir is None
        self._procs = []               # every Popen started by run()
        self._iptables_rule = None     # the FORWARD rule we added, to delete
        self._reporters = []           # objects with failure_report()
        self._old_sigterm = None
        self._up = False

    # -- names ------------------------------------------------------------

    def ns(self, i):
        """Namespace name of node i (1-based)."""
        self._check_node(i)
        return "sl%sn%d" % (self.tag, i)

    def veth(self, i):
        """Host-side veth of node i (its port on the bridge)."""
        self._check_node(i)
        return "sl%sh%d" % (self.tag, i)

    def addr(self, i):
        """IPv4 address of node i."""
        self._check_node(i)
        return "%s.%d" % (self.subnet, i)

    @property
    def host_addr(self):
        """The host's address on the bridge (where the test process is)."""
        return "%s.%d" % (self.subnet, HOST_OCTET)

    def _check_node(self, i):
        if not (isinstance(i, int) and 1 <= i <= self.nodes):
            raise ValueError("node %r: nodes are numbered 1..%d" % (i, self.nodes))

    # -- life cycle -------------------------------------------------------

    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.print_failure_report()
        self.down()
        return False

    def up(self):
        ok, why = can_use_netns()
        if not ok:
            raise NetnsError(why)
        cleanup_leftovers()
        if self._own_workdir:
            self.workdir = tempfile.mkdtemp(prefix="sluice-netns-")
        self._trap_sigterm()
        self._up = True
        self.subnet = self._pick_subnet()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", "%s/24" % self.host_addr, "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(1, self.nodes + 1):
            ns = self.ns(i)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", self.veth(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", self.veth(i), "master", self.bridge)
            _ip("link", "set", self.veth(i), "up")
            _ip("-n", ns, "addr", "add", "%s/24" % self.addr(i), "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        self._allow_forwarding()
        self._check_connectivity()

    def down(self):
        """Kill everything started here, delete namespaces, veths, bridge and
        our iptables rule.  Idempotent; never raises for things already gone."""
        if not self._up:
            return
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        for i in range(1, self.nodes + 1):
            ns = self.ns(i)
            _kill_netns_pids(ns)          # anything that left its process group
            _ip("netns", "del", ns, check=False)
            _ip("link", "del", self.veth(i), check=False)
        _ip("link", "del", self.bridge, check=False)
        if self._iptables_rule:
            _cmd(["iptables", "-D", "FORWARD"] + self._iptables_rule, check=False)
            self._iptables_rule = None
        self._restore_sigterm()
        if self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._up = False

    def _trap_sigterm(self):
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_term(signum, frame):
            raise KeyboardInterrupt("SIGTERM")

        self._old_sigterm = signal.signal(signal.SIGTERM, on_term)

    def _restore_sigterm(self):
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def _pick_subnet(self):
        _, routes, _ = _ip("-4", "route", "show", "table", "all", check=False)
        _, addrs, _ = _ip("-4", "-o", "addr", "show", check=False)
        taken = routes + addrs
        seed = (os.getpid() * 131 + int(self.tag.split("c")[1]) * 17) % (51 * 256)
        for step in range(51 * 256):
            v = (seed + step * 257) % (51 * 256)
            net = "10.%d.%d" % (200 + v // 256, v % 256)
            if not re.search(r"\b%s\.\d+" % re.escape(net), taken):
                return net
        raise NetnsError("no free /24 left in 10.200.0.0-10.250.255.0")

    # -- the firewall -----------------------------------------------------

    def _forward_would_drop(self):
        """True if bridged frames go through iptables' FORWARD chain
        (br_netfilter with bridge-nf-call-iptables=1) and that chain drops
        or rejects (Docker sets its policy to DROP)."""
        try:
            with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
                if f.read().strip() != "1":
                    return False
        except OSError:
            return False                  # br_netfilter not loaded
        if not shutil.which("iptables"):
            return False
        rc, out, _ = _cmd(["iptables", "-S", "FORWARD"], check=False)
        if rc != 0:
            return False
        return bool(re.search(r"^-P FORWARD (DROP|REJECT)|-j (DROP|REJECT)\b", out, re.M))

    def _allow_forwarding(self):
        if self._forward_would_drop():
            rule = ["-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
            _cmd(["iptables", "-I", "FORWARD", "1"] + rule)
            self._iptables_rule = rule

    def _firewall_facts(self):
        facts = []
        try:
            with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
                facts.append("net.bridge.bridge-nf-call-iptables=%s" % f.read().strip())
        except OSError:
            facts.append("br_netfilter not loaded")
        if shutil.which("iptables"):
            _, out, err = _cmd(["iptables", "-S", "FORWARD"], check=False)
            facts.append("iptables -S FORWARD:\n" + (out or err).strip())
        if shutil.which("nft"):
            _, out, _ = _cmd(["nft", "list", "ruleset"], check=False)
            hooks = [l.strip() for l in out.splitlines() if "hook forward" in l]
            if hooks:
                facts.append("nftables forward chains: %s" % "; ".join(hooks))
        return "\n".join(facts)

    def _check_connectivity(self):
        """Node 1 -> node K and host -> node 1 over TCP, or a NetnsError that
        says what on this machine drops the traffic."""
        pairs = [(1, self.nodes)] if self.nodes > 1 else []
        pairs.append((None, 1))
        for src, dst in pairs:
            if not self.tcp_reachable(src, dst, timeout=CONNECT_CHECK_TIMEOUT):
                where = "host" if src is None else "node %d (%s)" % (src, self.addr(src))
                raise NetnsError(
                    "no TCP traffic from %s to node %d (%s) over bridge %s: something on "
                    "this machine filters bridged traffic (%s). Facts:\n%s"
                    % (where, dst, self.addr(dst), self.bridge,
                       "we added an iptables FORWARD ACCEPT rule for the bridge"
                       if self._iptables_rule else
                       "e.g. Docker's FORWARD DROP with bridge-nf-call-iptables=1, or an "
                       "nftables forward chain with policy drop",
                       self._firewall_facts()))

    def tcp_reachable(self, src, dst, timeout=2.0, port=None):
        """True if a TCP connection from node src (None: the host) to a
        listener on node dst's address succeeds within timeout.  Makes its
        own listener on dst (an ephemeral port) unless port is given."""
        listener = None
        try:
            if port is None:
                def listen():
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.bind((self.addr(dst), 0))
                    s.listen(4)
                    return s
                listener = in_netns(self.ns(dst), listen)
                port = listener.getsockname()[1]
            try:
                c = connect_from(None if src is None else self.ns(src), self.addr(dst), port,
                                 timeout)
            except OSError:
                return False
            c.close()
            return True
        finally:
            if listener is not None:
                listener.close()

    # -- processes --------------------------------------------------------

    def run(self, i, argv, **popen_kwargs):
        """Start argv inside node i's namespace, in its own process group,
        SIGKILLed if this process dies; killed at cleanup.  Popen kwargs pass
        through (stdin defaults to /dev/null)."""
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        popen_kwargs["start_new_session"] = True
        cmd = ["ip", "netns", "exec", self.ns(i),
               "setpriv", "--pdeathsig", "KILL", "--"] + list(argv)
        p = subprocess.Popen(cmd, **popen_kwargs)
        self._procs.append(p)
        self._wait_armed(p)
        return p

    @staticmethod
    def _wait_armed(p, timeout=5.0):
        """Wait until p runs the program itself, i.e. setpriv has set the
        parent-death signal: had we died before that, the program would
        outlive us."""
        def armed():
            if p.poll() is not None:
                return True
            try:
                with open("/proc/%d/cmdline" % p.pid, "rb") as f:
                    cmdline = f.read()
            except OSError:
                return p.poll() is not None
            # empty while an exec is under way
            return cmdline and not (cmdline.startswith(b"ip\0netns\0exec\0")
                                    or cmdline.startswith(b"setpriv\0--pdeathsig\0"))
        wait_until(armed, timeout, "pid %d to exec its program" % p.pid, interval=0.002)

    @staticmethod
    def signal_group(proc, sig):
        """Send sig to proc's process group (everything run() started it
        with); no-op if it has exited."""
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    # -- faults -----------------------------------------------------------

    def cut(self, i):
        """Take node i's bridge port down: node i reaches nobody (not even
        the host) and nobody reaches it, until heal(i)."""
        _ip("link", "set", self.veth(i), "down")

    def heal(self, i):
        _ip("link", "set", self.veth(i), "up")

    def partition(self, groups):
        """Drop traffic between nodes in different groups (nftables rules
        inside each namespace; both directions).  groups: lists of node
        numbers, e.g. [[1, 2], [3]]; a node in no group is cut off from all
        other nodes.  The host stays reachable from every node.  Replaces any
        earlier partition; partition(None) or heal_partition() removes it."""
        if groups is not None and shutil.which("nft") is None:
            raise NetnsError("partition() needs nft (apt-get install nftables)")
        group_of = {}
        for g, members in enumerate(groups or ()):
            for i in members:
                self._check_node(i)
                if i in group_of:
                    raise ValueError("node %d is in two groups" % i)
                group_of[i] = g
        for i in range(1, self.nodes + 1):
            if groups is None:
                if shutil.which("nft"):
                    _cmd(["ip", "netns", "exec", self.ns(i), "nft", "delete", "table", "inet",
                          "sluice_partition"], check=False)
                continue
            others = [self.addr(j) for j in range(1, self.nodes + 1)
                      if j != i and (i not in group_of or group_of.get(j) != group_of[i])]
            script = "add table inet sluice_partition\ndelete table inet sluice_partition\n"
            if others:
                s = ", ".join(others)
                script += (
                    "table inet sluice_partition {\n"
                    "  chain input { type filter hook input priority -10; policy accept;"
                    " ip saddr { %s } drop; }\n"
                    "  chain output { type filter hook output priority -10; policy accept;"
                    " ip daddr { %s } drop; }\n"
                    "}\n" % (s, s))
            _cmd(["ip", "netns", "exec", self.ns(i), "nft", "-f", "-"], input=script)

    def heal_partition(self):
        self.partition(None)

    # -- failure reports --------------------------------------------------

    def add_reporter(self, obj):
        """Include obj.failure_report() -> str (e.g. the log tails of the
        processes it runs) in this cluster's failure_report()."""
        self._reporters.append(obj)

    def failure_report(self):
        """What to show when a test on this cluster fails: printed (stderr)
        when the with-block fails, and added to the pytest report by
        conftest.py for a fixture that yields the cluster."""
        parts = []
        for r in self._reporters:
            try:
                parts.append(r.failure_report())
            except Exception as e:
                parts.append("(%r.failure_report() failed: %r)" % (r, e))
        return "\n".join(parts) or "(nothing ran on cluster %s)" % self.tag

    def print_failure_report(self):
        sys.stderr.write(self.failure_report() + "\n")
        sys.stderr.flush()


# --------------------------------------------------------------------------
# etcd

def _b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


class EtcdCluster:
    """An etcd 3.4 cluster, one member per given node (static bootstrap,
    test timing: heartbeat 100 ms, election timeout 1 s).  Context manager;
    the members are also killed when the NetnsCluster goes down."""

    EXE = "/usr/bin/etcd"
    CLIENT_PORT = 2379
    PEER_PORT = 2380

    def __init__(self, net, members=(1, 2, 3), extra_args=()):
        self.net = net
        self.members = list(members)
        self.extra_args = list(extra_args)
        self.dir = tempfile.mkdtemp(prefix="etcd-", dir=net.workdir)
        self.token = "sluice-test-%s-%d" % (net.tag, int(time.time() * 1000))
        self.procs = {}
        net.add_reporter(self)

    def __enter__(self):
        for i in self.members:
            self.start(i)
        return self

    def __exit__(self, exc_type, exc, tb):
        for i in self.members:
            self.kill(i)
        return False

    def name(self, i):
        return "m%d" % i

    def log_path(self, i):
        return os.path.join(self.dir, "%s.log" % self.name(i))

    def endpoints(self, members=None):
        """"10.x.y.1:2379,10.x.y.2:2379,..." (sluiced's --cluster-etcd)."""
        return ",".join("%s:%d" % (self.net.addr(i), self.CLIENT_PORT)
                        for i in (members or self.members))

    def start(self, i):
        """Start (or restart, keeping its data dir) member i."""
        assert i in self.members
        if self.procs.get(i) is not None and self.procs[i].poll() is None:
            raise RuntimeError("etcd %s is already running" % self.name(i))
        a = self.net.addr(i)
        initial = ",".join("%s=http://%s:%d" % (self.name(j), self.net.addr(j), self.PEER_PORT)
                           for j in self.members)
        argv = [self.EXE, "--name", self.name(i),
                "--data-dir", os.path.join(self.dir, self.name(i)),
                "--listen-client-urls", "http://%s:%d,http://127.0.0.1:%d"
                % (a, self.CLIENT_PORT, self.CLIENT_PORT),
                "--advertise-client-urls", "http://%s:%d" % (a, self.CLIENT_PORT),
                "--listen-peer-urls", "http://%s:%d" % (a, self.PEER_PORT),
                "--initial-advertise-peer-urls", "http://%s:%d" % (a, self.PEER_PORT),
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", self.token,
                "--heartbeat-interval", "100", "--election-timeout", "1000",
                "--pre-vote",                 # a healed member does not depose the leader
                "--logger", "zap", "--log-outputs", "stderr",
                ] + self.extra_args
        with open(self.log_path(i), "ab") as log:
            log.write(b"==== start %s ====\n" % time.ctime().encode())
            log.flush()
            self.procs[i] = self.net.run(i, argv, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, i):
        """SIGKILL member i and wait for it."""
        p = self.procs.get(i)
        if p is not None and p.poll() is None:
            NetnsCluster.signal_group(p, signal.SIGCONT)
            NetnsCluster.signal_group(p, signal.SIGKILL)
            p.wait(timeout=10)

    def stop(self, i):
        """SIGSTOP member i (it keeps its sockets but answers nothing)."""
        NetnsCluster.signal_group(self.procs.get(i), signal.SIGSTOP)

    def cont(self, i):
        NetnsCluster.signal_group(self.procs.get(i), signal.SIGCONT)

    def alive(self, i):
        p = self.procs.get(i)
        return p is not None and p.poll() is None

    # -- the JSON gateway -------------------------------------------------

    def request(self, i, path, body, timeout=3.0, local=False):
        """POST body to member i's gateway (from the host over the bridge, or
        with local=True from inside node i to 127.0.0.1).  Returns (status,
        JSON); raises OSError if it cannot be reached in time."""
        if local:
            return http_request("127.0.0.1", self.CLIENT_PORT, "POST", path, body, timeout,
                                ns_name=self.net.ns(i))
        return http_request(self.net.addr(i), self.CLIENT_PORT, "POST", path, body, timeout)

    def put(self, i, key, value, timeout=3.0, local=False):
        """Put key=value through member i; True if etcd committed it, False
        on an etcd error or when member i is unreachable or too slow."""
        try:
            status, js = self.request(i, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)},
                                      timeout, local)
        except OSError:
            return False
        return status == 200 and isinstance(js, dict) and "error" not in js

    def get(self, i, key, timeout=3.0, local=False):
        """Linearizable read of key through member i: its value (str), or
        None if absent.  Raises OSError/RuntimeError if the read fails."""
        status, js = self.request(i, "/v3/kv/range", {"key": _b64(key)}, timeout, local)
        if status != 200 or not isinstance(js, dict) or "error" in js:
            raise RuntimeError("etcd range via %s: %s %r" % (self.name(i), status, js))
        kvs = js.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def status(self, i, timeout=2.0):
        """Member i's /v3/maintenance/status JSON, or None if unreachable."""
        try:
            status, js = self.request(i, "/v3/maintenance/status", {}, timeout)
        except OSError:
            return None
        return js if status == 200 and isinstance(js, dict) else None

    def healthy(self, i, timeout=2.0):
        """True if member i's /health says so (it has a leader and can
        serve a read)."""
        try:
            status, js = http_request(self.net.addr(i), self.CLIENT_PORT, "GET", "/health",
                                      timeout=timeout)
        except OSError:
            return False
        return status == 200 and isinstance(js, dict) and js.get("health") == "true"

    def leader(self, members=None):
        """Node number of the leader as the given (default: all) reachable
        members agree on it, or None."""
        ids, leaders = {}, set()
        for i in members or self.members:
            st = self.status(i)
            if not st or not st.get("leader"):
                continue
            ids[st["header"]["member_id"]] = i
            leaders.add(st["leader"])
        if len(leaders) == 1:
            return ids.get(leaders.pop())
        return None

    def wait_healthy(self, timeout, members=None):
        """Wait until every given (default: all) member is healthy, i.e. a
        leader exists and they serve reads; returns the leader's node."""
        members = members or self.members
        for i in members:
            if not self.alive(i):
                raise RuntimeError("etcd %s is not running\n%s"
                                   % (self.name(i), log_tail(self.log_path(i))))
        wait_until(lambda: all(self.healthy(i) for i in members), timeout,
                   "etcd members %s to be healthy" % members)
        return wait_until(lambda: self.leader(members), timeout, "an etcd leader")

    def failure_report(self):
        return "\n".join("---- etcd %s (node %d, %s) log tail ----\n%s"
                         % (self.name(i), i, "running" if self.alive(i) else "not running",
                            log_tail(self.log_path(i), 25))
                         for i in self.members)


# --------------------------------------------------------------------------
# sluiced in cluster mode

class SluicedNode:
    """A `sluiced` in cluster mode on node i of a NetnsCluster: AMQP 5672,
    HTTP 15672 and replication 5679 on the node's address, node id "n<i>",
    data dir kept across restart(); guest may log in from anywhere (the test
    process connects from the bridge's host address)."""

    AMQP_PORT = 5672
    HTTP_PORT = 15672
    REPLICATION_PORT = 5679

    def __init__(self, net, i, etcd_endpoints, node_id=None, lease_ttl=None, exe=None,
                 extra_args=()):
        """etcd_endpoints: EtcdCluster.endpoints(), or None for a standalone
        sluiced (no cluster flags) in the namespace."""
        self.net = net
        self.i = i
        self.node_id = node_id or "n%d" % i
        self.etcd_endpoints = etcd_endpoints
        self.lease_ttl = lease_ttl
        if exe is None:
            from conftest import _sluiced_path   # SLUICED, as every integration test
            exe = _sluiced_path()
        self.exe = exe
        self.extra_args = list(extra_args)
        self.workdir = tempfile.mkdtemp(prefix="sluiced-%s-" % self.node_id, dir=net.workdir)
        self.data_dir = os.path.join(self.workdir, "data")
        os.makedirs(self.data_dir)
        self.log_path = os.path.join(self.workdir, "sluiced.log")
        self.proc = None
        net.add_reporter(self)

    @property
    def host(self):
        return self.net.addr(self.i)

    def argv(self):
        a = [self.exe, "--amqp-port", str(self.AMQP_PORT), "--http-port", str(self.HTTP_PORT),
             "--prometheus-port", "0", "--data-dir", self.data_dir,
             "--default-user-loopback-only", "false"]
        if self.etcd_endpoints is not None:
            a += ["--cluster-etcd", self.etcd_endpoints, "--node-id", self.node_id,
                  "--advertise-host", self.host,
                  "--replication-port", str(self.REPLICATION_PORT)]
        if self.lease_ttl is not None:
            a += ["--cluster-lease-ttl", str(self.lease_ttl)]
        return a + self.extra_args

    def start(self, timeout=15.0):
        """Start and wait until its HTTP port accepts connections (not for
        leadership: see wait_role())."""
        assert not self.alive(), "sluiced %s already running" % self.node_id
        with open(self.log_path, "ab") as log:
            log.write(b"\n==== start %s ====\n" % time.ctime().encode())
            log.flush()
            self.proc = self.net.run(self.i, self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir)      # core files, if any, land there

        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError("sluiced %s exited with %s\n%s"
                                   % (self.node_id, self.proc.returncode, self.log_tail()))
            try:
                connect_from(None, self.host, self.HTTP_PORT, 0.5).close()
                return True
            except OSError:
                return False

        wait_until(listening, timeout, "sluiced %s to listen on %s:%d"
                   % (self.node_id, self.host, self.HTTP_PORT))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        NetnsCluster.signal_group(self.proc, signal.SIGCONT)   # a stopped one too
        NetnsCluster.signal_group(self.proc, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self, timeout=10.0):
        """SIGTERM, SIGKILL after timeout; returns the exit code (None if
        it had to be killed)."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        NetnsCluster.signal_group(self.proc, signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def sigstop(self):
        NetnsCluster.signal_group(self.proc, signal.SIGSTOP)

    def sigcont(self):
        NetnsCluster.signal_group(self.proc, signal.SIGCONT)

    def restart(self, timeout=15.0):
        """Stop (no-op if dead) and start again with the same data dir."""
        self.stop()
        return self.start(timeout)

    def log_tail(self, lines=60):
        return log_tail(self.log_path, lines)

    def leader_epoch(self):
        """The epoch of the last `<id> is the leader (epoch N)` line this
        node logged about itself, or None."""
        with open(self.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        found = re.findall(r"cluster: %s is the leader \(epoch (\d+)\)" % re.escape(self.node_id),
                           text)
        return int(found[-1]) if found else None

    def api(self, path, timeout=5.0):
        """GET http://node:15672<path> as guest; the parsed JSON.  Raises
        OSError if unreachable, RuntimeError on a non-200 answer."""
        auth = "Basic " + base64.b64encode(b"guest:guest").decode()
        status, js = http_request(self.host, self.HTTP_PORT, "GET", path, timeout=timeout,
                                  headers={"Authorization": auth})
        if status != 200:
            raise RuntimeError("GET %s on %s: %s %r" % (path, self.node_id, status, js))
        return js

    def role(self):
        """This node's role ("leader", "follower", "starting") as /api/nodes
        through this node shows it (entries are {"name": "sluice@<id>",
        "node_id": <id>, "role", "in_sync", ...}), or None if it does not
        answer."""
        try:
            for n in self.api("/api/nodes", timeout=2.0):
                if self.node_id in (n.get("node_id"), n.get("name"),
                                    (n.get("name") or "").partition("@")[2]):
                    return n.get("role")
        except (OSError, RuntimeError, ValueError, TypeError):
            return None
        return None

    def pika_params(self, **kw):
        return pika_params(self.host, self.AMQP_PORT, **kw)

    def failure_report(self):
        state = "running" if self.alive() else "not running (exit %s)" % (
            self.proc.returncode if self.proc else "never started")
        return "---- sluiced %s (node %d, %s) log tail ----\n%s" % (
            self.node_id, self.i, state, self.log_tail())


def pika_params(host, port=SluicedNode.AMQP_PORT, **kw):
    """pika.ConnectionParameters for guest on host:port, with timeouts short
    enough for fault tests (kw overrides)."""
    import pika
    opts = dict(host=host, port=port, virtual_host="/",
                credentials=pika.PlainCredentials("guest", "guest"),
                socket_timeout=5, stack_timeout=10, blocked_connection_timeout=5,
                connection_attempts=1, heartbeat=10)
    opts.update(kw)
    return pika.ConnectionParameters(**opts)


def wait_for_leader(nodes, timeout):
    """Wait until exactly one of the SluicedNodes says it is the leader in
    /api/nodes; return it."""
    def one():
        leaders = [n for n in nodes if n.alive() and n.role() == "leader"]
        return leaders[0] if len(leaders) == 1 else None
    return wait_until(one, timeout, "one sluiced leader among %s"
                      % [n.node_id for n in nodes])
