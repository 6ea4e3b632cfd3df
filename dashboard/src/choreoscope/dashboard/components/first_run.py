"""What the dashboard shows before there is anything to show: how to get events in."""

from __future__ import annotations

import streamlit as st

from choreoscope.collector.query.dashboard import mask_url

from . import fmt


def render(state: dict[str, object], store_url: str) -> None:
    shown = mask_url(store_url)
    if state["state"] == "unreachable":
        _unreachable(shown, str(state["detail"]))
        return
    st.title("Welcome to Choreoscope")
    if state["state"] == "missing":
        st.info(f"No store yet at `{state['detail']}`. It appears when the collector first runs.")
    else:
        st.info(f"The store `{shown}` has no events yet.")
    st.markdown(
        "Choreoscope rebuilds your event-driven workflows from what is on the Kafka bus. "
        "Three steps get the first flows onto this page:"
    )
    st.markdown("**1. Run the collector** against your brokers, with this same store:")
    # A masked password would not work in a copied command: it reads the URL from the
    # environment then.
    store = f"'{shown}'" if shown == store_url else '"$CHOREOSCOPE_STORE"'
    st.code(f"choreoscope --store {store} collect --bootstrap localhost:9092 "
            "--otlp-port 4318", language="bash")
    if shown != store_url:
        st.caption(f"With `CHOREOSCOPE_STORE` set to the store's URL (`{shown}`, password "
                   "included), as this dashboard has it.")
    st.markdown("**2. Instrument your services** (optional, but gives traces, causation and "
                "correlation ids):")
    st.code(
        "from kafka import KafkaProducer\n"
        "from choreoscope.instrumentation import instrument_producer, setup_tracing, "
        "traced_consumer\n\n"
        "setup_tracing(\"order-service\", endpoint=\"http://localhost:4318\")\n"
        "producer = instrument_producer(KafkaProducer(bootstrap_servers=\"localhost:9092\"),\n"
        "                               service=\"order-service\")\n"
        "producer.publish(\"orders\", \"order.placed\", {\"order_id\": \"ord_1\"}, "
        "subject=\"ord_1\")\n\n"
        "@traced_consumer(service=\"payment-service\", group=\"payments\")\n"
        "def handle(event):\n"
        "    ...  # events published here inherit the correlation id\n",
        language="python",
    )
    st.markdown("**3. Or try it all at once** with the demo shop (embedded broker, services, "
                "collector and this dashboard):")
    st.code("choreoscope demo", language="bash")
    st.caption("This page refreshes on its own; it turns into the overview when events arrive.")


def _unreachable(shown: str, detail: str) -> None:
    """A store that exists but cannot be read: not a first run, an outage."""
    st.title("The store cannot be read")
    st.error(f"The store `{shown}` cannot be read: {fmt.md(detail)}")
    st.markdown(
        "Nothing here is shown until it can be: check that the database is up and reachable "
        "from this host, that the URL (`--store` or `CHOREOSCOPE_STORE`) names the store the "
        "collector writes, and that this user may read it. A collector that cannot write to "
        "it either commits no offset meanwhile, and stores what it reads once it can."
    )
    st.caption("With auto-refresh on, this page tries again on its own and turns into the "
               "overview once the store answers.")
