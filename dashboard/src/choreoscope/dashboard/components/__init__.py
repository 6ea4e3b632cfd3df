"""Widgets shared by the pages: deep-link parameters, refresh control, Jaeger links, formats."""
