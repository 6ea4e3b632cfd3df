"""order-service: takes orders and writes `order.placed` through its transactional outbox.

Each order is one SQLite transaction: the order row and the outbox row commit together, and
the outbox relay publishes the event afterwards. It also runs the compensation: when a payment
fails or stock runs out, the order is cancelled (`order.cancelled`).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from typing import Any

from opentelemetry import trace

from choreoscope.instrumentation import Event, Outbox, OutboxRelay, traced_consumer

from .service import Service, options

NAME = "order-service"
log = logging.getLogger("choreoscope.demo")
PRODUCTS = [("mug-blue", 12.5), ("tee-black", 24.0), ("poster-a2", 9.9), ("socks-3p", 14.0)]


class ShopDatabase:
    """The order-service's own database: a SQLite file, or PostgreSQL in the compose stack."""

    def __init__(self, target: str) -> None:
        self.postgres = target.startswith(("postgresql://", "postgres://"))
        self.target = target

    def connect(self) -> Any:
        if self.postgres:
            import psycopg

            return psycopg.connect(self.target)
        conn = sqlite3.connect(self.target, timeout=30)
        conn.execute("pragma journal_mode=wal")
        return conn

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    def create_orders_table(self) -> None:
        conn = self.connect()
        try:
            conn.execute(
                "create table if not exists orders (id text primary key, customer text,"
                " sku text, amount real, status text, created_at text)"
            )
            conn.commit()
        finally:
            conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = options(__doc__ or NAME)
    parser.add_argument(
        "--db", required=True,
        help="the service's database: a SQLite file path or a postgresql:// URL",
    )
    parser.add_argument("--rate", type=float, default=5.0, help="orders per second")
    args = parser.parse_args(argv)
    svc = Service(NAME, args)
    tracer = svc.tracer_provider.get_tracer("demo.order-service")

    db = ShopDatabase(args.db)
    connect = db.connect
    db.create_orders_table()
    outbox = Outbox(connect, service=NAME)
    outbox.create_table()
    # Poison rows carry an aggregate type that maps to no valid topic: the relay keeps failing.
    relay = OutboxRelay(
        outbox, svc.producer, topic_for=lambda agg: agg, max_attempts=5,
        tracer_provider=svc.tracer_provider,
    )
    rng = random.Random(7821)

    def place_order(n: int) -> None:
        order_id = f"ord_{n:06d}"
        sku, price = rng.choice(PRODUCTS)
        qty = rng.randint(1, 3)
        poison = svc.chaos.hits("poison_outbox", order_id)
        with tracer.start_as_current_span("POST /orders", kind=trace.SpanKind.SERVER):
            conn = connect()
            try:
                conn.execute(
                    db.sql("insert into orders values (?, ?, ?, ?, 'placed', ?)"),
                    (order_id, f"cust_{rng.randint(1, 400):04d}", sku, price * qty,
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                )
                outbox.add(
                    conn,
                    aggregatetype="orders!" if poison else "orders",
                    aggregateid=order_id,
                    event_type="order.placed",
                    data={"order_id": order_id, "sku": sku, "quantity": qty,
                          "amount": round(price * qty, 2), "email": "customer@example.com"},
                )
                conn.commit()
            except Exception:
                conn.rollback()
                raise
            finally:
                conn.close()

    def take_orders() -> None:
        n = 0
        interval = 1.0 / args.rate if args.rate > 0 else 1.0
        next_at = time.monotonic()
        while not svc.stopping.is_set():
            n += 1
            place_order(n)
            next_at += interval
            svc.stopping.wait(max(0.0, next_at - time.monotonic()))

    def relay_loop() -> None:
        while not svc.stopping.is_set():
            try:
                sent = relay.run_once()
            except Exception as exc:  # noqa: BLE001 - the relay retries on its next pass
                log.warning("relay pass failed: %s", exc)
                sent = 0
            if not sent:
                svc.stopping.wait(0.2)

    @traced_consumer(service=NAME, group=NAME)
    def compensate(event: Event) -> None:
        if event.type not in ("payment.failed", "inventory.out_of_stock"):
            return
        conn = connect()
        try:
            conn.execute(db.sql("update orders set status = 'cancelled' where id = ?"),
                         (event.subject,))
            conn.commit()
        finally:
            conn.close()
        svc.producer.publish(
            "order-cancellations", "order.cancelled",
            {"order_id": event.subject, "reason": event.type},
            key=event.subject, subject=event.subject,
        )

    svc.spawn(take_orders, "orders")
    svc.spawn(relay_loop, "relay")
    svc.consume(["payments", "inventory"], compensate,
                types=frozenset({"payment.failed", "inventory.out_of_stock"}))
    svc.wait()


if __name__ == "__main__":
    main()
