"""Transports: thin adapters between a wire protocol and the dispatch core."""
