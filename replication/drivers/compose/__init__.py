"""Nodes as containers of a docker compose stack, controlled through docker compose."""
