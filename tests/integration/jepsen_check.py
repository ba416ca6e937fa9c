"""A Jepsen-style workload and checker for "no confirmed message is lost;
duplicates only as redeliveries".

    nodes = [n.pika_params() for n in sluiced_nodes]   # any node may forward
    w = Workload(nodes, queue="jepsen", publishers=2, consumers=2).start()
    ... cut links, kill nodes ...
    w.stop()                # publishers and consumers finish
    w.drain(timeout=30)     # read what is still queued
    report = check(w.history)
    assert report.ok, report

Publishers publish persistent messages with message_id "<publisher>-<n>" (a
fresh id for every attempt, never a retry of an id) to a durable classic
queue with publisher confirms; an id counts as confirmed only when
basic_publish returned without an exception.  Consumers ack manually, after
recording (id, redelivered).  On a connection error both move on to the next
node in the list, until a reconnect deadline.

check() reports
  lost        confirmed ids neither delivered nor drained;
  duplicates  ids delivered more than once without the redelivered flag: at
              most one delivery of an id may say redelivered=False (order is
              not used: two consumers' records of one id can race);
  unknown     delivered ids that no publisher attempted.
Unconfirmed ids may show up or not; either is fine.
"""

import threading
import time
from dataclasses import dataclass, field

try:
    import pika
    import pika.exceptions
    from pika.adapters.utils.connection_workflow import AMQPConnectorException
    # pika 1.x raises a handshake that times out (a node that accepts TCP but
    # is SIGSTOPped or cut off) as AMQPConnectorStackTimeout, which is no
    # AMQPError: without it here the client thread dies instead of moving on.
    _AMQP_ERRORS = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)
except ImportError:             # check() works without pika
    pika = None
    _AMQP_ERRORS = (OSError,)

BACKOFF = 0.2   # seconds between rounds over all nodes while none accepts us


class History:
    """What the clients saw; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.attempted = set()
        self.confirmed = set()
        self.deliveries = []     # (id, redelivered, consumer name)
        self.drained = []        # (id, redelivered)
        self.errors = []         # (who, what happened) -- for the report

    def attempt(self, mid):
        with self._lock:
            self.attempted.add(mid)

    def confirm(self, mid):
        with self._lock:
            self.confirmed.add(mid)

    def deliver(self, mid, redelivered, who):
        with self._lock:
            self.deliveries.append((mid, bool(redelivered), who))

    def drain(self, mid, redelivered):
        with self._lock:
            self.drained.append((mid, bool(redelivered)))

    def error(self, who, what):
        with self._lock:
            self.errors.append((who, what))


@dataclass
class Report:
    attempted: int
    confirmed: int
    delivered: int                 # distinct ids delivered or drained
    deliveries: int                # every delivery, drained ones included
    redeliveries: int              # deliveries flagged redelivered
    unconfirmed_seen: int          # attempted, not confirmed, yet delivered
    lost: list = field(default_factory=list)
    duplicates: dict = field(default_factory=dict)   # id -> [(redelivered, who)]
    unknown: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    @property
    def ok(self):
        return not (self.lost or self.duplicates or self.unknown)

    def __str__(self):
        lines = ["%s: %d attempted, %d confirmed, %d distinct delivered (%d deliveries, "
                 "%d flagged redelivered, %d unconfirmed ids seen)"
                 % ("OK" if self.ok else "VIOLATION", self.attempted, self.confirmed,
                    self.delivered, self.deliveries, self.redeliveries, self.unconfirmed_seen)]
        if self.lost:
            lines.append("lost (confirmed, never delivered): %d, e.g. %s"
                         % (len(self.lost), self.lost[:10]))
        if self.duplicates:
            some = dict(list(self.duplicates.items())[:10])
            lines.append("delivered more than once without redelivered: %d, e.g. %s"
                         % (len(self.duplicates), some))
        if self.unknown:
            lines.append("delivered but never published: %d, e.g. %s"
                         % (len(self.unknown), self.unknown[:10]))
        if self.errors:
            lines.append("client errors: %d, last: %s" % (len(self.errors), self.errors[-5:]))
        return "\n".join(lines)


def _id_key(mid):
    """Sort "p1-10" after "p1-9"."""
    head, _, n = str(mid).rpartition("-")
    return (head, int(n)) if n.isdigit() else (str(mid), -1)


def check(history):
    """The Report for a History (see the module docstring)."""
    seen = {}                                  # id -> [(redelivered, who)]
    for mid, redelivered, who in history.deliveries:
        seen.setdefault(mid, []).append((redelivered, who))
    for mid, redelivered in history.drained:
        seen.setdefault(mid, []).append((redelivered, "drain"))
    lost = sorted(history.confirmed - seen.keys(), key=_id_key)
    duplicates = {mid: ds for mid, ds in seen.items()
                  if sum(1 for r, _ in ds if not r) > 1}
    unknown = sorted((m for m in seen if m not in history.attempted), key=_id_key)
    return Report(
        attempted=len(history.attempted), confirmed=len(history.confirmed),
        delivered=len(seen), deliveries=sum(len(ds) for ds in seen.values()),
        redeliveries=sum(1 for ds in seen.values() for r, _ in ds if r),
        unconfirmed_seen=sum(1 for m in seen if m in history.attempted
                             and m not in history.confirmed),
        lost=lost, duplicates=dict(sorted(duplicates.items(), key=lambda kv: _id_key(kv[0]))),
        unknown=unknown, errors=list(history.errors))


# --------------------------------------------------------------------------
# clients

class _Client(threading.Thread):
    """Connection handling shared by Publisher and Consumer: connect to the
    nodes in turn, starting after the last one that failed."""

    def __init__(self, name, nodes, queue, history, stop, reconnect_timeout, first_node):
        super().__init__(name=name, daemon=True)
        self.nodes = list(nodes)
        self.queue = queue
        self.history = history
        self.stop_event = stop
        self.reconnect_timeout = reconnect_timeout
        self.node = first_node % len(self.nodes)
        self.conn = None
        self.connects = 0

    def _connect(self):
        """An open channel with the queue declared, or None if no node took
        us before the reconnect deadline (or we were told to stop)."""
        deadline = time.monotonic() + self.reconnect_timeout
        tried = 0
        while not self.stop_event.is_set():
            params = self.nodes[self.node]
            try:
                self.conn = pika.BlockingConnection(params)
                ch = self.conn.channel()
                ch.queue_declare(self.queue, durable=True)
                self._setup(ch)
                self.connects += 1
                return ch
            except _AMQP_ERRORS as e:
                self.history.error(self.name, "connect %s:%s: %r" % (params.host, params.port, e))
                self._close()
                self.node = (self.node + 1) % len(self.nodes)
            tried += 1
            if time.monotonic() >= deadline:
                self.history.error(self.name, "gave up: no node accepted us for %.0fs"
                                   % self.reconnect_timeout)
                return None
            if tried % len(self.nodes) == 0:
                self.stop_event.wait(BACKOFF)     # every node refused: pace the retries
        return None

    def _setup(self, ch):
        pass

    def _lost(self, e):
        self.history.error(self.name, repr(e))
        self._close()
        self.node = (self.node + 1) % len(self.nodes)

    def _close(self):
        if self.conn is not None:
            try:
                if self.conn.is_open:
                    self.conn.close()
            except Exception:
                pass
            self.conn = None


class Publisher(_Client):
    """Publishes "<name>-<n>" for n = 0, 1, ... until stop is set (or count
    messages were attempted), one confirmed publish at a time."""

    def __init__(self, name, nodes, queue, history, stop, count=None, reconnect_timeout=30.0,
                 first_node=0, body=b"x" * 16):
        super().__init__(name, nodes, queue, history, stop, reconnect_timeout, first_node)
        self.count = count
        self.body = body
        self.published = 0

    def _setup(self, ch):
        ch.confirm_delivery()

    def run(self):
        ch = None
        try:
            while not self.stop_event.is_set() and (self.count is None
                                                    or self.published < self.count):
                if ch is None:
                    ch = self._connect()
                    if ch is None:
                        return
                mid = "%s-%d" % (self.name, self.published)
                self.published += 1
                self.history.attempt(mid)
                props = pika.BasicProperties(message_id=mid, delivery_mode=2)
                try:
                    ch.basic_publish("", self.queue, self.body, props, mandatory=True)
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
                    self.history.error(self.name, "%s not confirmed: %r" % (mid, e))
                    continue                  # the channel is still fine
                except _AMQP_ERRORS as e:
                    self._lost(e)
                    ch = None
                    continue
                self.history.confirm(mid)
        except Exception as e:       # a client bug: make it visible in the report
            self.history.error(self.name, "crashed: %r" % e)
            raise
        finally:
            self._close()


class Consumer(_Client):
    """Consumes with manual acks until stop is set, recording every delivery
    before acking it."""

    def __init__(self, name, nodes, queue, history, stop, prefetch=50, reconnect_timeout=30.0,
                 first_node=0):
        super().__init__(name, nodes, queue, history, stop, reconnect_timeout, first_node)
        self.prefetch = prefetch

    def _setup(self, ch):
        ch.basic_qos(prefetch_count=self.prefetch)

    def run(self):
        try:
            while not self.stop_event.is_set():
                ch = self._connect()
                if ch is None:
                    return
                try:
                    for method, props, _ in ch.consume(self.queue, inactivity_timeout=0.2):
                        if self.stop_event.is_set():
                            break
                        if method is None:
                            continue
                        self.history.deliver(props.message_id, method.redelivered, self.name)
                        ch.basic_ack(method.delivery_tag)
                except _AMQP_ERRORS as e:
                    self._lost(e)
        except Exception as e:
            self.history.error(self.name, "crashed: %r" % e)
            raise
        finally:
            self._close()       # unacked (prefetched) messages go back to the queue


def drain(nodes, queue, history, timeout=30.0):
    """basic_get (and ack) everything left in the queue into history.drained,
    through whichever node answers, until the queue reports 0 messages.
    Raises AssertionError if that does not happen within timeout."""
    deadline = time.monotonic() + timeout
    stop = threading.Event()
    client = _Client("drain", nodes, queue, history, stop, timeout, 0)
    try:
        while time.monotonic() < deadline:
            client.reconnect_timeout = max(0.1, deadline - time.monotonic())
            ch = client._connect()
            if ch is None:
                break
            try:
                while time.monotonic() < deadline:
                    method, props, _ = ch.basic_get(queue, auto_ack=False)
                    if method is None:
                        if ch.queue_declare(queue, durable=True, passive=True) \
                                .method.message_count == 0:
                            return
                        continue
                    history.drain(props.message_id, method.redelivered)
                    ch.basic_ack(method.delivery_tag)
            except _AMQP_ERRORS as e:
                client._lost(e)
    finally:
        client._close()
    raise AssertionError("drain of %s did not finish within %.0fs" % (queue, timeout))


class Workload:
    """publishers Publisher and consumers Consumer threads on one queue,
    spread over the nodes (each starts on a different node)."""

    def __init__(self, nodes, queue, publishers=2, consumers=2, reconnect_timeout=30.0,
                 prefetch=50):
        self.nodes = list(nodes)
        self.queue = queue
        self.history = History()
        self.stop_event = threading.Event()
        self.publishers = [Publisher("p%d" % k, nodes, queue, self.history, self.stop_event,
                                     reconnect_timeout=reconnect_timeout, first_node=k)
                           for k in range(publishers)]
        self.consumers = [Consumer("c%d" % k, nodes, queue, self.history, self.stop_event,
                                   prefetch=prefetch, reconnect_timeout=reconnect_timeout,
                                   first_node=publishers + k)
                          for k in range(consumers)]

    def start(self):
        for t in self.consumers + self.publishers:
            t.start()
        return self

    def confirmed(self):
        return len(self.history.confirmed)

    def stop(self, timeout=30.0):
        """Stop all clients and wait for them; AssertionError if one hangs."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for t in self.publishers + self.consumers:
            t.join(max(0.0, deadline - time.monotonic()))
        hung = [t.name for t in self.publishers + self.consumers if t.is_alive()]
        if hung:
            raise AssertionError("clients still running %.0fs after stop: %s" % (timeout, hung))
        crashed = [e for e in self.history.errors if e[1].startswith("crashed")]
        if crashed:
            raise AssertionError("clients crashed: %s" % crashed)

    def drain(self, timeout=30.0):
        drain(self.nodes, self.queue, self.history, timeout)

    def check(self):
        return check(self.history)
