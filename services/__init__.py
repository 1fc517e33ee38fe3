"""Reelhouse shared library: config, ports, adapters, tokens and web helpers every service is built from."""
