"""Choreoscope collector: read the bus and the traces, rebuild every choreographed workflow."""
