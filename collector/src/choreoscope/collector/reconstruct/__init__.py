"""Rebuild flows, the choreography graph and processing orders from the store."""
