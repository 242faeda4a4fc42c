"""The native manager: replikit's own commands (failover, switchover, rejoin) move the primary."""
