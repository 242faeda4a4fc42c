"""``python -m replication``: the ``replikit`` command, for callers that have an interpreter
but not the console script on their PATH (the detached service, started by sys.executable)."""

from replication.cli import main

main()
