"""docker-compose.yml: the full stack is wired the way the CLI expects (no engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from choreoscope.collector.cli import build_parser

ROOT = Path(__file__).parents[1]
SHOP = ("order-service", "payment-service", "inventory-service", "shipping-service",
        "notification-service", "pricing-legacy")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    """Every service's image carries an explicit version tag, never latest."""
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and re.match(r"^\d+\.\d+", tag), f"{name}: {image}"


def test_infrastructure_images(compose: dict[str, Any]) -> None:
    """Real Apache Kafka in KRaft mode, Jaeger 2.20.0 and PostgreSQL, each with a health check."""
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["jaeger"]["image"] == "jaegertracing/jaeger:2.20.0"
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ("kafka", "jaeger", "postgres"):
        assert "healthcheck" in services[name], name


def test_ports(compose: dict[str, Any]) -> None:
    """The dashboard is on 8501 and Jaeger's UI on 16686."""
    services = compose["services"]
    assert "8501:8501" in services["dashboard"]["ports"]
    assert "16686:16686" in services["jaeger"]["ports"]
    assert "4318:4318" in services["jaeger"]["ports"]


def test_collector_reads_kafka_jaeger_and_the_outbox(compose: dict[str, Any]) -> None:
    """The collector's command parses with the real CLI and points at Kafka, Jaeger and PostgreSQL."""
    collector = compose["services"]["collector"]
    args = build_parser().parse_args(collector["command"])
    assert args.command == "collect"
    assert args.bootstrap == "kafka:9092"
    assert args.jaeger == "http://jaeger:16686"
    assert [o for o in args.outbox] == [
        "order-service=postgresql://choreoscope:choreoscope@postgres:5432/shop#outbox"
    ]
    assert collector["environment"]["CHOREOSCOPE_STORE"].startswith("postgresql://")
    assert "@postgres:5432/" in collector["environment"]["CHOREOSCOPE_STORE"]
    for dep in ("kafka", "jaeger", "postgres"):
        assert collector["depends_on"][dep]["condition"] == "service_healthy"
    # `collect` supervises a worker process: an init process reaps what a crashed one leaves
    assert collector["init"] is True


def test_dashboard_links_to_jaeger(compose: dict[str, Any]) -> None:
    """The dashboard's command parses with the real CLI and links to Jaeger's UI."""
    dashboard = compose["services"]["dashboard"]
    args = build_parser().parse_args(dashboard["command"])
    assert (args.command, args.port, args.jaeger_ui) == ("dashboard", 8501, "http://localhost:16686")
    assert dashboard["environment"]["CHOREOSCOPE_STORE"] == (
        compose["services"]["collector"]["environment"]["CHOREOSCOPE_STORE"]
    )


def test_shop_services_run_the_demo_modules(compose: dict[str, Any]) -> None:
    """Each shop service runs its demo module against Kafka and exports spans to Jaeger."""
    import importlib

    for name in SHOP:
        svc = compose["services"][name]
        module, *argv = svc["command"]
        importlib.import_module(module)
        assert argv[argv.index("--bootstrap") + 1] == "kafka:9092"
        if name != "pricing-legacy":
            assert argv[argv.index("--otlp-endpoint") + 1] == "http://jaeger:4318"
        assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "postgresql://" in " ".join(compose["services"]["order-service"]["command"])


def test_one_dockerfile_builds_the_project_images(compose: dict[str, Any]) -> None:
    """Every project image is built from the one Dockerfile at the root."""
    assert (ROOT / "Dockerfile").is_file()
    for name in ("collector", "dashboard", *SHOP):
        assert compose["services"][name]["build"] == ".", name
