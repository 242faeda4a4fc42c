"""Point-in-time recovery of a compose stack into a NEW stack (a project, volumes, ports and
subnets of its own), never in place.

The new stack's ``.env`` (in the new data directory) has the source's passwords and backup
passphrase, so its roles log in as before and it can read the source's repository, and ports
and subnets of its own. A one-off container of its ``pg0``, with the source's repository
volume mounted read-only, runs ``restore-node.sh``: the backup is restored into the new
``pg0`` volume, recovered from the source's archive to the target and promoted, and the
stanza of the new stack's own repository is created. ``compose up`` then starts the stack:
``pg0`` as its primary, the replicas cloned from it, the migrations (nothing left to do), the
service and its load balancer. The stack is recorded in the new data directory as
``cluster attach-compose`` records one, so every cluster and backup command works on it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

from replication.backup.base import BackupTool, RestoredCluster, RestoreRequest, TargetKind
from replication.compose.attach import attach_compose, compose_cluster_state
from replication.compose.env import DEFAULT_PORTS, ensure_env_file, free_ports, read_env
from replication.errors import BadInputError, NodeCommandError
from replication.ports import require_free_ports
from replication.topology import save_state, state_path
from service.routing.lsn import format_lsn

# Where the one-off restore container sees the source's repository (read-only).
SOURCE_REPOSITORY = "/var/lib/pgbackrest-source"
REPOSITORY_VOLUME = "backup-repo"
RESTORE_TIMEOUT_SECONDS = 1800.0
# Settings of the source's .env that belong to that stack alone: the new one gets its own.
OWN_SETTINGS = (*DEFAULT_PORTS, "REPLIKIT_SUBNET", "REPLIKIT_LB_ADDRESS", "REPLIKIT_PEER_SUBNET")


def compose_name(project: str) -> str:
    """A project name as compose normalises it (and prefixes its volumes with)."""
    return re.sub(r"[^-_a-z0-9]", "", project.lower())


def _source_volume(project: str) -> str:
    volume = f"{compose_name(project)}_{REPOSITORY_VOLUME}"
    found = subprocess.run(
        ["docker", "volume", "inspect", volume],
        capture_output=True,
        check=False,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if found.returncode != 0:
        raise BadInputError(
            f"The stack {project} has no repository volume {volume}; it was started by a "
            "compose file without WAL archiving: start it again with 'replikit compose up'."
        )
    return volume


def _project_exists(project: str) -> bool:
    """True when Docker holds containers or volumes of a compose project of this name."""
    label = f"label=com.docker.compose.project={project}"
    for command in (["ps", "-a", "-q"], ["volume", "ls", "-q"]):
        found = subprocess.run(
            ["docker", *command, "--filter", label],
            capture_output=True, text=True, check=False, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if found.stdout.strip():
            return True
    return False


def _write_env(request: RestoreRequest, env_file: Path) -> dict[str, str]:
    source_env = request.source.compose_env_file
    assert source_env is not None
    carried = {k: v for k, v in read_env(Path(source_env)).items() if k not in OWN_SETTINGS}
    if request.base_port is None:
        ports = free_ports()
    else:
        ports = {key: request.base_port + index for index, key in enumerate(DEFAULT_PORTS)}
        require_free_ports(ports.values())
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(
        "# Written by replikit restore: the source stack's passwords and backup passphrase,\n"
        "# ports and subnets of this stack's own. Never commit this file.\n"
        + "".join(f"{key}={value}\n" for key, value in carried.items())
    )
    env_file.chmod(0o600)
    ensure_env_file(env_file, ports=ports)
    return read_env(env_file)


def _recovery_env(request: RestoreRequest) -> dict[str, str]:
    target = request.target
    env = {"REPLIKIT_RESTORE_REPO": SOURCE_REPOSITORY, "REPLIKIT_RESTORE_SET": request.backup.label}
    if target.kind is TargetKind.TIME and target.time is not None:
        env |= {"REPLIKIT_RESTORE_TYPE": "time", "REPLIKIT_RESTORE_TARGET": str(target.time)}
    elif target.kind is TargetKind.LSN and target.lsn is not None:
        env |= {"REPLIKIT_RESTORE_TYPE": "lsn", "REPLIKIT_RESTORE_TARGET": format_lsn(target.lsn)}
    else:
        env["REPLIKIT_RESTORE_TYPE"] = "default"
    return env


def restore_stack(request: RestoreRequest, tool: BackupTool) -> RestoredCluster:
    """Build the new stack (see the module's docstring); on failure, remove what it made.
    ``tool`` chose the backup already: the restore reads the source's repository volume."""
    # Imported here: packaging (which the stack's wheelhouse code needs) is not in the
    # service image, whose CLI imports this module.
    from replication.compose.stack import ComposeStack

    source = request.source
    if source.compose_file is None or source.compose_project is None:
        raise BadInputError(
            "The source stack's compose file or project is not recorded; run 'replikit "
            "cluster attach-compose' for it again."
        )
    project = compose_name(request.project or f"{source.compose_project}-restored")
    if project == compose_name(source.compose_project):
        raise BadInputError(
            "A restore builds a new stack and never overwrites its source; give a new --project."
        )
    volume = _source_volume(source.compose_project)
    new_dir, clock = request.new_dir, request.clock
    created = not new_dir.exists()
    env_file = new_dir / ".env"
    compose_file = Path(source.compose_file)
    stack = ComposeStack(
        root=compose_file.parent, env_file=env_file, project_name=project, compose_file=compose_file
    )
    if _project_exists(project):
        raise BadInputError(
            f"A compose project named {project} exists already; give a new --project."
        )
    try:
        settings = _write_env(request, env_file)
        # Recorded at once: the directory holds a cluster (its .env beside the state file).
        save_state(new_dir, compose_cluster_state(compose_file, env_file, project))
        options = [f for k, v in _recovery_env(request).items() for f in ("-e", f"{k}={v}")]
        stack.run(
            "run", "--rm", "--no-deps", "-v", f"{volume}:{SOURCE_REPOSITORY}:ro", *options,
            "--entrypoint", "bash", "pg0", "/replikit/scripts/restore-node.sh",
            what=f"restoring backup {request.backup.label}", timeout=RESTORE_TIMEOUT_SECONDS,
        )  # fmt: skip
        clock.step("recovered_and_promoted", node="pg0", project=project)
        stack.up(timeout=300)
        clock.step("stack_ready", project=project)
        state = attach_compose(new_dir, compose_file, env_file, project)
    except BaseException:
        with contextlib.suppress(NodeCommandError):
            stack.down(volumes=True)
        if created:
            shutil.rmtree(new_dir, ignore_errors=True)
        else:  # it was empty: leave it so
            for written in (env_file, state_path(new_dir)):
                written.unlink(missing_ok=True)
        raise
    down = f"replikit compose down --env-file {env_file} -p {project} --volumes"
    return RestoredCluster.of(
        request,
        primary_port=state.primary_node.port,
        replicas=len(state.replicas),
        next_steps=(
            f"It is the compose project {project}, serving on "
            f"http://127.0.0.1:{settings['REPLIKIT_HTTP_PORT']}; its cluster and backup "
            f"commands take --data-dir {new_dir}; remove it with '{down}'."
        ),
    )
