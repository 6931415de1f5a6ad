"""Architectures (interface, registry, the hand-tabled families, detection), state dicts and their files (`.pt`, `.dcz`)."""
