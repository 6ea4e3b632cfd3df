"""inventory-service: reserves stock once a payment is authorized."""

from __future__ import annotations

from choreoscope.instrumentation import Event, traced_consumer

from .service import Service, options

NAME = "inventory-service"


def main(argv: list[str] | None = None) -> None:
    svc = Service(NAME, options(__doc__ or NAME).parse_args(argv))

    @traced_consumer(service=NAME, group=NAME)
    def on_payment(event: Event) -> None:
        if event.type != "payment.authorized":
            return
        if svc.chaos.hits("swallow", event.subject):
            return  # a bug: the event is acknowledged and nothing follows (a stuck flow)
        order_id = event.data["order_id"]
        if svc.chaos.hits("out_of_stock", event.subject):
            svc.producer.publish(
                "inventory", "inventory.out_of_stock", {"order_id": order_id, "sku": "mug-blue"},
                key=event.subject, subject=event.subject,
            )
            return
        svc.producer.publish(
            "inventory", "inventory.reserved",
            {"order_id": order_id, "warehouse": "ams-1", "reservation": f"res_{order_id[4:]}"},
            key=event.subject, subject=event.subject,
        )

    svc.consume(["payments"], on_payment, types=frozenset({"payment.authorized"}))
    svc.wait()


if __name__ == "__main__":
    main()
