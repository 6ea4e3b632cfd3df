"""shipping-service: schedules the shipment of every order whose stock is reserved."""

from __future__ import annotations

from choreoscope.instrumentation import Event, traced_consumer

from .service import Service, options

NAME = "shipping-service"


class CarrierRejected(RuntimeError):
    """The carrier's API refused the shipment."""


def main(argv: list[str] | None = None) -> None:
    svc = Service(NAME, options(__doc__ or NAME).parse_args(argv))

    @traced_consumer(service=NAME, group=NAME)
    def on_reserved(event: Event) -> None:
        if event.type != "inventory.reserved":
            return
        if svc.chaos.hits("shipping_fails", event.subject):
            raise CarrierRejected(f"carrier rejected the address of {event.subject}")
        svc.producer.publish(
            "shipments", "shipment.scheduled",
            {"order_id": event.data["order_id"], "carrier": "postnl", "eta_days": 2},
            key=event.subject, subject=event.subject,
        )

    svc.consume(["inventory"], on_reserved, types=frozenset({"inventory.reserved"}))
    svc.wait()


if __name__ == "__main__":
    main()
