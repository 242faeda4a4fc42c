"""``python -m replication``: the ``replikit`` command, for callers that have an interpreter
but not the console script on their PATH (the detached service, started by sys.executable).

The guard matters: the image decoder's worker processes (multiprocessing, forkserver) import
the main module again under another name, and must not run the command a second time.
"""

from replication.cli import main

if __name__ == "__main__":
    main()
