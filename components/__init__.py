"""Pulumi ComponentResources: thin wiring that carries rendered artifacts to real resources."""
