"""A stand-in for docker compose and the docker client, for testing the compose driver
without Docker.

Installed as ``docker-compose`` (v1) and as ``docker`` (``docker compose ...`` is the v2
plugin, present when $FAKE_DOCKER_HAS_COMPOSE is 1), it answers ``version --short`` with
$FAKE_COMPOSE_VERSION, appends every other call to $FAKE_DOCKER_LOG and acts on local nodes
described in $FAKE_DOCKER_NODES (JSON: service -> {"env": {...}}) the way compose would act on
the containers: kill -s SIGQUIT -> immediate stop, stop -> fast stop, start -> start,
ps --services --filter status=running -> running services, run ... SERVICE -c SCRIPT -> the
script as the postgres account with the service's environment (/replikit/scripts mapped to the
local scripts). As the docker client it answers ``ps -q`` filtered by the compose labels of
$FAKE_COMPOSE_PROJECT's services (logged as ``["docker", ...]``).

It accepts only the grammar that both compose v1 (1.29.2, checked against the real one) and
v2 accept, so an option only one of them knows (v2's ``ps --status``, ``up --wait``) fails the
test instead of failing on a user's machine.
"""

from __future__ import annotations

import json
import os
import sys

from replication.server_user import ServerUser

GLOBAL_OPTIONS = {"-f", "--project-directory", "-p", "--env-file"}


class Unsupported(Exception):
    """An argv that real compose v1 or v2 would not accept."""


def split_globals(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """The global options (each must take a value) and the rest, from the verb on."""
    options: dict[str, str] = {}
    while args and args[0].startswith("-"):
        if args[0] not in GLOBAL_OPTIONS or len(args) < 2:
            raise Unsupported(f"global option {args[0]}")
        options[args[0]] = args[1]
        args = args[2:]
    if "-f" not in options or "--project-directory" not in options:
        raise Unsupported("the compose file and project directory must be given")
    if not args:
        raise Unsupported("no command")
    return options, args


def parse_run(rest: list[str]) -> tuple[str, str, dict[str, str]]:
    """``run --rm --no-deps --user U [-e K=V]... --entrypoint sh SERVICE -c SCRIPT``."""
    if rest[:4] != ["--rm", "--no-deps", "--user", "postgres"]:
        raise Unsupported(f"run options {rest[:4]}")
    rest, extra = rest[4:], {}
    while rest[:1] == ["-e"]:
        key, _, value = rest[1].partition("=")
        extra[key] = value
        rest = rest[2:]
    if len(rest) != 5 or rest[:2] != ["--entrypoint", "sh"] or rest[3] != "-c":
        raise Unsupported(f"run {rest}")
    return rest[2], rest[4], extra


def act(args: list[str], nodes: dict[str, dict[str, dict[str, str]]]) -> int:
    user = ServerUser.detect()
    verb, rest = args[0], args[1:]

    def pg_ctl(service: str, *options: str) -> int:
        env = nodes[service]["env"]
        command = [f"{env['PGBIN']}/pg_ctl", "--pgdata", env["PGDATA"], *options]
        return user.run(command, env=env, what="pg_ctl", check=False).returncode

    if verb == "kill" and rest[:2] == ["-s", "SIGQUIT"] and len(rest) == 3:
        return pg_ctl(rest[-1], "--mode", "immediate", "--wait", "stop")
    if verb == "stop" and len(rest) == 1:
        return pg_ctl(rest[-1], "--mode", "fast", "--wait", "stop")
    if verb == "start" and len(rest) == 1:
        log_file = nodes[rest[-1]]["env"]["LOG_FILE"]
        return pg_ctl(rest[-1], "--wait", f"--log={log_file}", "start")
    if verb == "ps" and rest == ["--services", "--filter", "status=running"]:
        for service in nodes:
            if pg_ctl(service, "status") == 0:
                print(service)
        return 0
    if verb == "run":
        service, script, extra = parse_run(rest)
        env = {**nodes[service]["env"], **extra}
        script = script.replace("/replikit/scripts", env["SCRIPTS"])
        result = user.run(["sh", "-c", script], env=env, what="run", check=False)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode
    raise Unsupported(" ".join(args))


def docker_ps(args: list[str], nodes: dict[str, dict[str, dict[str, str]]]) -> int:
    """``docker ps -q --filter ...`` with the compose labels: a made-up id per running node."""
    if args[:2] != ["ps", "-q"] or len(args) % 2:
        raise Unsupported(f"docker {' '.join(args)}")
    filters = dict(f.removeprefix("label=").split("=", 1) for f in args[3::2])
    if set(filters) != {
        "com.docker.compose.project",
        "com.docker.compose.service",
        "com.docker.compose.oneoff",
        "status",
    }:
        raise Unsupported(f"docker ps filters {filters}")
    service = filters["com.docker.compose.service"]
    if (
        filters["com.docker.compose.project"] == os.environ.get("FAKE_COMPOSE_PROJECT")
        and filters["com.docker.compose.oneoff"] == "False"
        and filters["status"] == "running"
        and service in nodes
    ):
        env = nodes[service]["env"]
        command = [f"{env['PGBIN']}/pg_ctl", "--pgdata", env["PGDATA"], "status"]
        if ServerUser.detect().run(command, env=env, what="pg_ctl", check=False).returncode == 0:
            print(f"fake-{service}")
    return 0


def log_call(entry: list[str]) -> None:
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\n")


def main(argv: list[str], program: str) -> int:
    """Log entries: ``["docker", ...]`` for the client, ``["docker-compose", ...]`` (v1) or
    ``["docker", "compose", ...]`` is logged as ``["compose", ...]`` (v2) for compose."""
    if program == "docker":
        if argv[:1] != ["compose"]:  # the docker client itself
            log_call(["docker", *argv])
            try:
                return docker_ps(argv, json.loads(os.environ["FAKE_DOCKER_NODES"]))
            except Unsupported as error:
                print(f"fake docker: unsupported {error}", file=sys.stderr)
                return 2
        if os.environ.get("FAKE_DOCKER_HAS_COMPOSE") != "1":  # Docker 20.10 from Debian
            print("docker: 'compose' is not a docker command.", file=sys.stderr)
            return 1
        argv = argv[1:]
    if argv == ["version", "--short"]:
        print(os.environ.get("FAKE_COMPOSE_VERSION", "2.29.7"))
        return 0
    log_call(["compose" if program == "docker" else "docker-compose", *argv])
    try:
        _, args = split_globals(argv)
        return act(args, json.loads(os.environ["FAKE_DOCKER_NODES"]))
    except Unsupported as error:
        print(f"fake compose: unsupported {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[2:], program=sys.argv[1]))
