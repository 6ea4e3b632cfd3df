"""The demo shop: order, payment, inventory, shipping and notification services, plus a legacy
pricing feed that is not instrumented. Topics:

    orders              order.placed                      (order-service, through its outbox)
    payments            payment.authorized / payment.failed   (payment-service)
    inventory           inventory.reserved / inventory.out_of_stock (inventory-service)
    shipments           shipment.scheduled                (shipping-service)
    order-cancellations order.cancelled                   (order-service, compensation)
    notifications       notification.sent                 (notification-service)
    pricing             PriceChanged, hand-written JSON envelope (pricing-legacy, uninstrumented)
"""
