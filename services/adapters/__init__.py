"""Adapters implementing services.ports; only services.bootstrap chooses among them."""
