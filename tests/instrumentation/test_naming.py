"""is_past_tense: events are named for facts that happened."""

from __future__ import annotations

import pytest

from choreoscope.instrumentation.naming import is_past_tense


@pytest.mark.parametrize(
    "name",
    [
        "order.placed",
        "PaymentFailed",
        "payment.sent",
        "payment.paid",
        "order_shipped",
        "invoice-created",
        "inventory:reserved",
        "checkout/completed",
        "user.signed_up",
        "UserSignedUp",
        "cart.checked_out",
        "order.placed.v2",
        "OrderPlacedV2",
        "order.placed.2",
        "terms.agreed",
        "stock.held",
        "email.written",
        "Order.Cancelled",
        "ORDER.PLACED",
        "inventory.out_of_stock",
        "product.back_in_stock",
        "InventoryOutOfStock",
    ],
)
def test_past_tense(name: str) -> None:
    """Past forms, phrasal verbs, states reached and versioned names read as facts."""
    assert is_past_tense(name)


@pytest.mark.parametrize(
    "name",
    [
        "order.place",
        "SendEmail",
        "payment.capture",
        "user.feed",
        "order.proceed",
        "order",
        "shipping.bed",
        "user.sign_up",
        "v2",
        "",
        "...",
        "order.placed.now",
    ],
)
def test_not_past_tense(name: str) -> None:
    """Commands, nouns, -eed words that are not past forms and empty names are not."""
    assert not is_past_tense(name)
