"""Nodes as plain PostgreSQL processes on this machine (``driver``), and the helper processes
replikit supervises beside them (``processes``)."""
