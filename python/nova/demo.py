"""``nova demo``: the order-processing flow of the best-practice guide, end to end.

Everything runs on the embedded defaults, in a temporary directory:

- events named ``domain.action``, checked by :func:`nova.strict_type_names` (a badly named
  event is rejected at publish);
- a bus topic ``orders`` of 16 partitions keyed by the ``customer_id`` metadata, so each
  customer's orders are processed in order while customers run in parallel;
- idempotent listeners (a re-delivered order is not charged twice);
- retryable errors (a payment-gateway timeout) retried by a :class:`nova.RetryPolicy`,
  permanent ones (an invalid order) not retried;
- dead letters in SQLite (:class:`nova.DeadLetterQueue` with a path), redriven once the
  gateway is back;
- an :class:`nova.SqliteStore` receiving every published event, and a replay of the orders
  topic to rebuild a projection;
- metrics: the components' stats, and Prometheus metrics through :mod:`nova.metrics` when
  ``prometheus_client`` is installed;
- a graceful :func:`nova.shutdown`.

Failures are planned from a seeded random generator, so the counts are the same on every
run. ``run_demo(redis_url=...)`` runs the same flow on the Redis Streams backend.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, TextIO

from ._core import Event, Listener, WorkerPool
from ._types import DeliveryMode, OnFull
from .bus import Bus
from .errors import PermanentError, RetryableError, ValidationError
from .lifecycle import shutdown
from .resilience import (
    Backoff,
    DeadLetterConfig,
    DeadLetterQueue,
    ListenerConfig,
    RetryPolicy,
    idempotent,
)
from .store import SqliteStore
from .validation import strict_type_names

__all__ = ["DemoResult", "run_demo", "SEED", "ORDERS", "CUSTOMERS"]

SEED = 2024
ORDERS = 120
CUSTOMERS = 24
FLAKY = 12  # the gateway times out once on these orders, then accepts them
OUTAGE = 3  # the gateway is down for these orders until it recovers
INVALID = 4  # orders with bad data: a permanent error
DUPLICATES = 10  # orders delivered a second time (say, a producer retried a publish)
MAX_ATTEMPTS = 3
DEAD_LETTER_ALERT = 5  # alert when more dead letters than this have piled up


# -- the domain ------------------------------------------------------------------------------


class GatewayTimeout(RetryableError):
    """The payment gateway did not answer in time: worth retrying."""


class GatewayUnavailable(RetryableError):
    """The payment gateway is down: worth retrying, later."""


class InvalidOrder(PermanentError):
    """The order itself is wrong: retrying cannot help."""


class PaymentGateway:
    """A stand-in for a remote payment service with planned failures."""

    def __init__(self, flaky: set[str], outage: set[str]) -> None:
        self._lock = threading.Lock()
        self._flaky = set(flaky)
        self._outage = set(outage)
        self.charged: dict[str, float] = {}

    def charge(self, order_id: str, amount: float) -> None:
        with self._lock:
            if order_id in self._outage:
                raise GatewayUnavailable(f"payment gateway unavailable for order {order_id}")
            if order_id in self._flaky:
                self._flaky.discard(order_id)  # times out once
                raise GatewayTimeout(f"payment gateway timed out charging order {order_id}")
            if order_id in self.charged:
                raise AssertionError(f"order {order_id} charged twice")
            self.charged[order_id] = amount

    def recover(self) -> None:
        with self._lock:
            self._outage.clear()


@dataclass(frozen=True)
class DemoResult:
    """The counts the demo printed."""

    orders: int  # distinct orders published
    duplicates: int  # re-deliveries published
    rejected: int  # events refused by the validator
    processed: int  # events whose listener finished successfully (orders paid + receipts sent)
    orders_paid: int
    receipts_sent: int
    retried: int  # retry attempts
    retried_events: int  # distinct events that needed at least one retry
    dead_lettered: int  # events dead-lettered by the first pass
    redriven: int  # dead letters handed back to the bus after the gateway recovered
    dead_letters_left: int  # still in the dead-letter queue at the end (permanent errors)
    duplicates_skipped: int  # deliveries the idempotent listener skipped
    replayed: int  # events replayed from the store
    undelivered: int  # events a shutdown report gave back (0 expected)
    backend: str  # "in-process" or "redis"


class _Publisher:
    """What ``DeadLetterQueue.redrive`` hands events to: our ``publish`` helper."""

    def __init__(self, publish: Any) -> None:
        self.publish = publish


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.retried_ids: set[str] = set()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def attempt(self, event_id: str) -> None:
        with self._lock:
            self.attempts[event_id] += 1


def _plan(rng: random.Random) -> tuple[list[dict[str, Any]], set[str], set[str], list[int]]:
    """The orders, which of them the gateway fails on (flaky, outage), and which are
    delivered twice; all drawn from the seeded generator."""
    customers = [f"cust-{i:03d}" for i in range(1, CUSTOMERS + 1)]
    orders: list[dict[str, Any]] = []
    for i in range(1, ORDERS + 1):
        items = [
            {"sku": f"SKU-{rng.randrange(100, 999)}", "qty": rng.randint(1, 3)}
            for _ in range(rng.randint(1, 3))
        ]
        orders.append(
            {
                "id": f"order-{i:04d}",
                "customer_id": rng.choice(customers),
                "items": items,
                "total": round(rng.uniform(5, 250), 2),
            }
        )
    picked = rng.sample(range(ORDERS), FLAKY + OUTAGE + INVALID)
    flaky = {orders[i]["id"] for i in picked[:FLAKY]}
    outage = {orders[i]["id"] for i in picked[FLAKY : FLAKY + OUTAGE]}
    for i in picked[FLAKY + OUTAGE :]:
        orders[i]["total"] = -orders[i]["total"]  # invalid: a negative total
    healthy = [i for i in range(ORDERS) if i not in set(picked)]
    duplicates = rng.sample(healthy, DUPLICATES)
    return orders, flaky, outage, duplicates


def _prometheus_lines(bus: Bus) -> list[str]:
    """A few Prometheus samples of the bus, when prometheus_client is installed."""
    try:
        from prometheus_client import CollectorRegistry

        from .metrics import PrometheusCollector
    except ImportError:
        return [
            "prometheus_client is not installed: pip install 'nova-events[prometheus]' "
            "to export these counters"
        ]
    registry = CollectorRegistry()
    try:
        registry.register(PrometheusCollector(bus))
        families = list(registry.collect())
    except Exception as exc:  # noqa: BLE001 - metrics are a bonus, never a failure
        return [f"(metrics unavailable: {type(exc).__name__}: {exc})"]
    lines = []
    for family in families:
        if family.name != "nova_events_processed":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                lines.append(f"{sample.name}{{{labels}}} {sample.value:g}")
    if bus.backend is not None and not lines:
        return [
            "(the Prometheus collector reads the in-process bus; this backend keeps its "
            "counters in bus.stats())"
        ]
    return sorted(lines) or ["(no samples)"]


def run_demo(
    redis_url: str | None = None, *, out: TextIO | None = None, workdir: str | None = None
) -> DemoResult:
    """Run the demo, print its story and summary to ``out`` (stdout by default) and return
    the counts. ``redis_url`` runs the bus on the Redis Streams backend (a unique consumer
    group and unique topic names per run). ``workdir`` keeps the SQLite files there instead
    of in a temporary directory that is removed at the end."""
    stream = out if out is not None else sys.stdout

    def say(line: str = "") -> None:
        print(line, file=stream, flush=True)

    started = time.monotonic()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="nova-demo-")
        workdir = tmp.name
    try:
        return _run(redis_url, workdir, say, started)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _run(redis_url: str | None, workdir: str, say: Any, started: float) -> DemoResult:
    run_id = uuid.uuid4().hex[:8]
    backend: Any = None
    if redis_url is not None:
        from .backends.redis import RedisBackend

        # First, so a bad URL or an unreachable server fails before anything else starts.
        backend = RedisBackend(redis_url, group=f"nova-demo-{run_id}", name="demo-redis")

    store = SqliteStore(os.path.join(workdir, "events.db"), name="order-events")
    dead_letters_path = os.path.join(workdir, "dead-letters.db")
    dlq = DeadLetterQueue(dead_letters_path, name="order-dead-letters")
    pool = WorkerPool(workers=4, queue_size=1000, name="demo-pool")
    bus = Bus(pool=pool, store=store, validator=strict_type_names, backend=backend, name="orders-bus")
    if backend is None:
        backend_name = "in-process"
        orders_topic, payments_topic = "orders", "payments"
    else:
        backend_name = "redis"
        # Fresh streams for every run, so earlier runs' events are not consumed again.
        orders_topic, payments_topic = f"orders-{run_id}", f"payments-{run_id}"
    try:
        return _flow(
            bus,
            store,
            dlq,
            pool,
            dead_letters_path,
            orders_topic,
            payments_topic,
            backend_name,
            workdir,
            say,
            started,
        )
    finally:
        # After a failure part-way, still stop everything (a no-op after the graceful shutdown).
        shutdown(bus, dlq, store, pool, timeout=5.0)


def _flow(
    bus: Bus,
    store: SqliteStore,
    dlq: DeadLetterQueue,
    pool: WorkerPool,
    dead_letters_path: str,
    orders_topic: str,
    payments_topic: str,
    backend_name: str,
    workdir: str,
    say: Any,
    started: float,
) -> DemoResult:
    rng = random.Random(SEED)
    orders, flaky, outage, duplicate_idx = _plan(rng)
    gateway = PaymentGateway(flaky, outage)
    counters = _Counters()
    alerts: list[str] = []
    alert_lock = threading.Lock()

    def publish(topic: str, event: Event) -> None:
        bus.publish(topic, event)  # validated and stored by the bus, whatever the backend

    say(f"Nova demo: order processing on the {backend_name} bus (seed {SEED})")
    say(f"  files: SQLite event store and dead letters in {workdir}")

    # -- topology ------------------------------------------------------------------------
    for topic, partitions in ((orders_topic, 16), (payments_topic, 4)):
        bus.create_topic(
            topic,
            partitions=partitions,
            ordering_key="customer_id",
            delivery_mode=DeliveryMode.AT_LEAST_ONCE,
            on_full=OnFull.BLOCK,
        )
    say(
        f"  topic '{orders_topic}': 16 partitions keyed by customer_id, at-least-once; "
        f"topic '{payments_topic}': 4 partitions"
    )

    # -- listeners -----------------------------------------------------------------------
    def charge_payment(event: Event) -> None:
        """Validate the order, charge it, announce the payment."""
        counters.attempt(event.id)
        order = event.data
        if order["total"] <= 0 or not order["items"]:
            raise InvalidOrder(f"order {order['id']}: total must be positive, got {order['total']}")
        gateway.charge(order["id"], order["total"])
        counters.add("orders_paid")
        publish(
            payments_topic,
            Event(
                "payment.captured",
                {"order_id": order["id"], "amount": order["total"]},
                metadata={"customer_id": event.metadata["customer_id"], "order_id": order["id"]},
            ),
        )

    def send_receipt(event: Event) -> None:
        counters.add("receipts_sent")

    def on_dead_letter(event: Event, error: BaseException) -> None:
        # 1. log with context, 2. the queue (DeadLetterConfig.queue) stores it, 3. alert.
        failing.discard(event.id)  # settled: in the dead-letter queue
        counters.add("dead_lettered")
        with alert_lock:
            if counters.counts["dead_lettered"] == DEAD_LETTER_ALERT + 1:
                alerts.append(
                    f"more than {DEAD_LETTER_ALERT} dead letters in this run: "
                    "someone should look at the payment flow"
                )

    charge_once = idempotent(Listener("charge-payment", charge_payment))

    failing: set[str] = set()  # events whose last attempt failed and that are not settled

    def payment_processor(event: Event) -> None:
        if event.id in failing:  # a retry of a delivery that failed
            counters.add("retried")
            counters.retried_ids.add(event.id)
        before = counters.attempts[event.id]
        try:
            charge_once(event)
        except Exception:
            failing.add(event.id)
            raise
        failing.discard(event.id)
        if counters.attempts[event.id] == before:  # the idempotent wrapper skipped it
            counters.add("duplicates_skipped")

    config = ListenerConfig(
        timeout=10.0,
        retry=RetryPolicy(
            max_attempts=MAX_ATTEMPTS,
            initial_delay=0.02,
            max_delay=0.2,
            backoff=Backoff.EXPONENTIAL,
            retry_on=(RetryableError,),
        ),
        dead_letter=DeadLetterConfig(queue=dlq, handler=on_dead_letter),
    )
    subscriptions = [
        bus.subscribe(orders_topic, Listener("payment-processor", payment_processor), config=config),
        bus.subscribe(payments_topic, idempotent(Listener("receipt-sender", send_receipt))),
    ]

    # -- 1. a badly named event is refused -----------------------------------------------
    rejected = 0
    try:
        publish(orders_topic, Event("OrderCreated", {}, metadata={"customer_id": "cust-001"}))
    except ValidationError:
        rejected += 1
        say("  rejected 'OrderCreated' at publish: not a domain.action name (strict_type_names)")

    # -- 2. the orders -------------------------------------------------------------------
    events = [
        Event(
            "order.created",
            order,
            metadata={"customer_id": order["customer_id"], "source": "web", "schema_version": "1"},
        )
        for order in orders
    ]
    for ev in events:
        publish(orders_topic, ev)
    for i in duplicate_idx:  # the same events (same ids) a second time
        publish(orders_topic, events[i])
    if not bus.flush(timeout=30):
        say("  warning: the bus did not drain within 30 s")
    say(
        f"  published {ORDERS} orders from {CUSTOMERS} customers and {DUPLICATES} duplicate "
        f"deliveries; the gateway times out once on {FLAKY} orders and is down for {OUTAGE}; "
        f"{INVALID} orders are invalid"
    )

    entries = dlq.list()
    by_type = Counter(e.error_type for e in entries)
    dead_first = len(entries)
    say(f"  dead letters: {dead_first} (" + ", ".join(f"{n} {t}" for t, n in sorted(by_type.items())) + ")")
    for entry in entries[:3]:
        say(
            f"    {entry.event.data['id']} {entry.error_type} after {entry.attempts} attempt(s): "
            f"{entry.error_message}"
        )
    for alert in alerts:
        say(f"  ALERT: {alert}")

    # -- 3. the gateway recovers: redrive the dead letters --------------------------------
    gateway.recover()
    redriven = dlq.redrive(bus if bus.backend is None else _Publisher(publish))
    bus.flush(timeout=30)
    left = dlq.count()
    say(
        f"  gateway recovered: redrove {redriven} dead letters; {left} came back "
        "(permanent errors are not fixed by retrying)"
    )

    # -- 4. replay the stored orders into a projection -----------------------------------
    revenue: dict[str, float] = {}
    seen_ids: set[str] = set()

    def rebuild(event: Event) -> None:
        counters.add("replayed")
        if event.id in seen_ids:
            return
        seen_ids.add(event.id)
        if event.data["id"] in gateway.charged:
            customer = event.metadata["customer_id"]
            revenue[customer] = round(revenue.get(customer, 0.0) + event.data["total"], 2)

    replayed = bus.replay(orders_topic, rebuild)
    top = sorted(revenue.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    say(
        f"  replayed {replayed} stored '{orders_topic}' events ({len(seen_ids)} distinct orders) "
        f"into a revenue projection; top customers: " + ", ".join(f"{c} {v:.2f}" for c, v in top)
    )

    # -- 5. metrics ----------------------------------------------------------------------
    stats = bus.stats()
    store_stats = store.stats()
    say(
        f"  bus stats: published {stats.events_published}, processed {stats.events_processed}, "
        f"failed {stats.failed_events}, queued {stats.queued_events}"
    )
    say(f"  store stats: {store_stats.total_events} events in {store_stats.total_streams} streams")
    for line in _prometheus_lines(bus):
        say(f"  metrics: {line}")

    # -- 6. graceful shutdown ------------------------------------------------------------
    if bus.backend is not None:
        # This run's streams are of no use to later runs: stop consuming, then remove them.
        for sub in subscriptions:
            sub.unsubscribe()
        for topic in (orders_topic, payments_topic):
            try:
                bus.delete_topic(topic)
            except Exception:  # noqa: BLE001 - cleanup only
                pass
    reports = shutdown(bus, dlq, store, pool, timeout=10.0)
    bus_report = reports[0]
    undelivered = len(getattr(bus_report, "undelivered", []) or [])
    with DeadLetterQueue(dead_letters_path) as reopened:
        kept = reopened.count()
    say(
        f"  shutdown: bus drained {getattr(bus_report, 'drained', 0)}, undelivered {undelivered}; "
        f"{kept} dead letters kept on disk for analysis"
    )

    result = DemoResult(
        orders=ORDERS,
        duplicates=DUPLICATES,
        rejected=rejected,
        processed=counters.counts["orders_paid"] + counters.counts["receipts_sent"],
        orders_paid=counters.counts["orders_paid"],
        receipts_sent=counters.counts["receipts_sent"],
        retried=counters.counts["retried"],
        retried_events=len(counters.retried_ids),
        dead_lettered=dead_first,
        redriven=redriven,
        dead_letters_left=left,
        duplicates_skipped=counters.counts["duplicates_skipped"],
        replayed=replayed,
        undelivered=undelivered,
        backend=backend_name,
    )
    say()
    say("Summary")
    say(
        f"  events processed:   {result.processed} ({result.orders_paid} orders paid, "
        f"{result.receipts_sent} receipts sent)"
    )
    say(f"  retried:            {result.retried} retry attempts ({result.retried_events} events)")
    say(
        f"  dead-lettered:      {result.dead_lettered} ("
        + ", ".join(f"{n} {t}" for t, n in sorted(by_type.items()))
        + ")"
    )
    say(
        f"  redriven:           {result.redriven} ({result.redriven - result.dead_letters_left} "
        f"paid, {result.dead_letters_left} back in the dead-letter queue)"
    )
    say(f"  duplicates skipped: {result.duplicates_skipped}")
    say(f"  rejected:           {result.rejected}")
    say(f"  replayed:           {result.replayed}")
    say(f"  finished in {time.monotonic() - started:.1f} s")
    return result
