"""Continuous WAL archiving, backups and point-in-time recovery: one interface for the backup
tool (:mod:`.base`), one module per tool (:mod:`.pgbackrest`), the registry that picks one by
the name in the state file (:mod:`.tools`), and building a new cluster from a restore
(:mod:`.restore`)."""
