"""notification-service: tells the customer about their order, from several topics.

With chaos on, its consumer of the `orders` topic lags behind, so a `payment.failed` can be
processed here before the `order.placed` that caused it: a real out-of-order arrival.
"""

from __future__ import annotations

import time

from choreoscope.instrumentation import Event, traced_consumer

from .service import Service, options

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

    def lag(record: object) -> None:
        # A slow mail server on this topic: each order is handled lag_s after it was published.
        due = record.timestamp / 1000 + svc.chaos.lag_s  # type: ignore[attr-defined]
        while not svc.stopping.is_set() and time.time() < due:
            time.sleep(min(0.1, max(0.0, due - time.time())))

    svc.consume(["orders"], notify, before=lag if svc.chaos.lag_s else None)
    svc.consume(["payments", "order-cancellations", "shipments"], notify)
    svc.wait()


if __name__ == "__main__":
    main()
