"""payment-service: authorizes the payment of every placed order."""

from __future__ import annotations

import time

from choreoscope.instrumentation import Event, traced_consumer

from .service import Service, options

NAME = "payment-service"


def main(argv: list[str] | None = None) -> None:
    svc = Service(NAME, options(__doc__ or NAME).parse_args(argv))

    @traced_consumer(service=NAME, group=NAME)
    def on_order(event: Event) -> None:
        if event.type != "order.placed":
            return
        order = event.data
        time.sleep(0.02)  # talking to the card processor
        if svc.chaos.hits("payment_fails", event.subject):
            svc.producer.publish(
                "payments", "payment.failed",
                {"order_id": order["order_id"], "reason": "card declined"},
                key=event.subject, subject=event.subject,
            )
            return
        paid = svc.producer.publish(
            "payments", "payment.authorized",
            {"order_id": order["order_id"], "amount": order["amount"], "card": "4242 4242 4242 4242"},
            key=event.subject, subject=event.subject,
        )
        if svc.chaos.hits("duplicate_publish", event.subject):
            # A retry after a lost acknowledgement: the same event goes out a second time.
            svc.resend("payments", paid)

    svc.consume(["orders"], on_order, types=frozenset({"order.placed"}))
    svc.wait()


if __name__ == "__main__":
    main()
