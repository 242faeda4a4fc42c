"""``replikit compose ...``: the docker compose stack in one command each, on compose v1 or v2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from replication.compose.env import ensure_env_file, read_env
from replication.errors import BadInputError

if TYPE_CHECKING:
    from replication.compose.stack import ComposeStack

VARIANTS = ("default", "ha")

compose_app = typer.Typer(
    help="Build, start and stop the docker compose stack (compose v2 or v1).",
    no_args_is_help=True,
)
console = Console(width=None if Console().is_terminal else 140)

EnvFileOption = Annotated[
    Path, typer.Option("--env-file", help="The stack's settings; written when missing.")
]
ProjectOption = Annotated[
    str | None, typer.Option("--project-name", "-p", help="Compose project name.")
]
ProfileOption = Annotated[
    list[str] | None,
    typer.Option("--profile", help="Also start this profile (loadtest, monitoring, grafana)."),
]
VariantOption = Annotated[
    str,
    typer.Option(
        "--variant",
        help="default (replikit fails over on command) or ha (Patroni + etcd fail over by "
        "themselves; project name <directory>-ha unless -p is given).",
    ),
]


def _stack(env_file: Path, project_name: str | None, variant: str = "default") -> ComposeStack:
    # Imported here: the other commands should not pay for packaging's marker machinery.
    from replication.compose.stack import ComposeStack, Variant

    if variant not in VARIANTS:
        raise BadInputError(f"Unknown variant {variant!r}; choose default or ha.")
    return ComposeStack(
        root=Path.cwd(),
        env_file=env_file.absolute(),
        project_name=project_name,
        variant=Variant(variant),
    )


@compose_app.command("up")
def up(
    env_file: EnvFileOption = Path(".env"),
    project_name: ProjectOption = None,
    variant: VariantOption = "default",
    profile: ProfileOption = None,
    build: Annotated[bool, typer.Option(help="Build the images first.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all-healthy.")] = 300.0,
) -> None:
    """Write .env if needed, build the images, start the stack and wait until it is healthy."""
    stack = _stack(env_file, project_name, variant)
    added = ensure_env_file(env_file)
    if added:
        secrets = [key for key in added if key.endswith("_PASSWORD")]
        console.print(
            f"Wrote {len(added)} settings to {env_file}"
            + (f" (generated {', '.join(secrets)})" if secrets else "")
            + "."
        )
    profiles = profile or []
    if build:
        console.print("Building the images (the first time takes a few minutes)...")
        stack.build(profiles=profiles)
    states = stack.up(profiles=profiles, timeout=timeout)
    console.print(f"All {len(states)} containers are ready.")
    settings = read_env(env_file)
    http, admin = settings["REPLIKIT_HTTP_PORT"], settings["REPLIKIT_ADMIN_PORT"]
    console.print(
        f"API: http://127.0.0.1:{http}/api/v1/images  docs: http://127.0.0.1:{http}/docs\n"
        f"Admin (router view, metrics, HAProxy stats): http://127.0.0.1:{admin}/cluster "
        f"http://127.0.0.1:{admin}/metrics http://127.0.0.1:{admin}/haproxy"
    )


@compose_app.command("build")
def build_images(
    env_file: EnvFileOption = Path(".env"),
    project_name: ProjectOption = None,
    variant: VariantOption = "default",
    profile: ProfileOption = None,
) -> None:
    """Make the Debian base if needed, download the wheelhouse, build every image."""
    stack = _stack(env_file, project_name, variant)
    ensure_env_file(env_file)
    stack.build(profiles=profile or [])
    console.print("Images built.")


@compose_app.command("down")
def down(
    env_file: EnvFileOption = Path(".env"),
    project_name: ProjectOption = None,
    variant: VariantOption = "default",
    volumes: Annotated[
        bool, typer.Option("--volumes", help="Also remove the database volumes (all data).")
    ] = False,
) -> None:
    """Stop and remove the stack's containers and networks (and volumes with --volumes)."""
    stack = _stack(env_file, project_name, variant)
    if not env_file.is_file():
        console.print(f"No {env_file}: nothing was started from this directory.")
        return
    stack.down(volumes=volumes)
    console.print("Stack removed" + (" with its volumes." if volumes else "; volumes kept."))


@compose_app.command("logs")
def logs(
    env_file: EnvFileOption = Path(".env"),
    project_name: ProjectOption = None,
    variant: VariantOption = "default",
    service: Annotated[list[str] | None, typer.Argument(help="Services (default: all).")] = None,
) -> None:
    """Follow the stack's logs (the last 100 lines of each service first)."""
    stack = _stack(env_file, project_name, variant)
    stack.run("logs", "--follow", "--tail=100", *(service or []), what="logs", capture=False)


SCENARIOS = {"browse": "BrowseUser", "upload": "UploadUser", "mixed": "MixedUser"}


@compose_app.command("load")
def load(
    env_file: EnvFileOption = Path(".env"),
    project_name: ProjectOption = None,
    variant: VariantOption = "default",
    scenario: Annotated[str, typer.Option(help="browse, upload or mixed.")] = "mixed",
    users: Annotated[int, typer.Option(help="Locust users.", min=1)] = 20,
    spawn_rate: Annotated[float, typer.Option(help="Users started per second.")] = 10.0,
    duration: Annotated[int, typer.Option(help="Seconds of load.", min=1)] = 30,
) -> None:
    """Headless Locust through the load balancer, with the upload rate limit off for the run."""
    if scenario not in SCENARIOS:
        raise BadInputError(f"Unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}.")
    if not env_file.is_file():
        raise BadInputError(
            f"There is no {env_file}; start the stack with 'make compose-up' first."
        )
    stack = _stack(env_file, project_name, variant)
    result = stack.load(
        scenario=SCENARIOS[scenario], users=users, spawn_rate=spawn_rate, seconds=duration
    )
    # Locust's tables are wider than a terminal; rich would fold them.
    sys.stdout.write(result.stdout + result.stderr)
