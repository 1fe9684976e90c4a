"""Experiments (network namespaces, capped links) behind ``fades bench``."""
