"""notification-service: tells the customer about their order, from several topics.

With chaos on, the `orders` records of some orders lag behind, so the `payment.failed` (or
`payment.authorized`) of such an order is processed here before the `order.placed` that caused
it: a real out-of-order arrival.
"""

from __future__ import annotations

import queue
import time
from typing import Any

from choreoscope.instrumentation import Event, traced_consumer

from .service import Service, log, options

NAME = "notification-service"

MESSAGES = {
    "order.placed": "We received your order",
    "payment.failed": "Your payment was declined",
    "order.cancelled": "Your order was cancelled",
    "shipment.scheduled": "Your order is on its way",
}


def main(argv: list[str] | None = None) -> None:
    svc = Service(NAME, options(__doc__ or NAME).parse_args(argv))

    @traced_consumer(service=NAME, group=NAME)
    def notify(event: Event) -> None:
        message = MESSAGES.get(event.type or "")
        if message is None:
            return
        svc.producer.publish(
            "notifications", "notification.sent",
            {"order_id": event.subject, "channel": "email", "email": "customer@example.com",
             "message": message},
            key=event.subject, subject=event.subject,
        )

    # One consumer (one group member) for every topic: with chaos on, the `orders` records of
    # some orders wait for a slow mail server, each handled lag_s after it was published, while
    # everything else is handled at once.
    slow: queue.Queue[Any] = queue.Queue()

    def mail_server() -> None:
        while not svc.stopping.is_set():
            try:
                record = slow.get(timeout=0.2)
            except queue.Empty:
                continue
            due = record.timestamp / 1000 + svc.chaos.lag_s
            while not svc.stopping.is_set() and time.time() < due:
                time.sleep(min(0.1, max(0.0, due - time.time())))
            try:
                notify(record)
            except Exception as exc:  # noqa: BLE001 - logged, the mail server goes on
                log.warning("handler failed on %s@%s: %s", record.topic, record.offset, exc)

    def route(record: Any) -> None:
        if record.topic == "orders" and svc.chaos.hits("slow_mail", _text(record.key)):
            slow.put(record)
        else:
            notify(record)

    if svc.chaos.lag_s:
        svc.spawn(mail_server, f"{NAME}-mail-server")
    svc.consume(["orders", "payments", "order-cancellations", "shipments"], route,
                types=frozenset(MESSAGES))
    svc.wait()


def _text(key: bytes | None) -> str | None:
    return key.decode("utf-8", "replace") if key is not None else None


if __name__ == "__main__":
    main()
