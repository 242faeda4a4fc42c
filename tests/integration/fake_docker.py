"""A stand-in for the docker client, for testing the compose driver without Docker.

It appends every call to $FAKE_DOCKER_LOG and acts on local nodes described in
$FAKE_DOCKER_NODES (JSON: service -> {"env": {...}}) the way the compose command would act on
the container: kill -s SIGQUIT -> immediate stop, stop -> fast stop, start -> start,
ps --services -> running services, run ... SERVICE -c SCRIPT -> the script as the postgres
account with the service's environment (/replikit/scripts mapped to the local scripts).
"""

from __future__ import annotations

import json
import os
import sys

from replication.server_user import ServerUser


def main(argv: list[str]) -> int:
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    nodes: dict[str, dict[str, dict[str, str]]] = json.loads(os.environ["FAKE_DOCKER_NODES"])
    user = ServerUser.detect()
    args = argv[argv.index("--project-directory") + 2 :]
    verb, rest = args[0], args[1:]

    def pg_ctl(service: str, *options: str) -> int:
        env = nodes[service]["env"]
        command = [f"{env['PGBIN']}/pg_ctl", "--pgdata", env["PGDATA"], *options]
        return user.run(command, env=env, what="pg_ctl", check=False).returncode

    if verb == "kill":
        return pg_ctl(rest[-1], "--mode", "immediate", "--wait", "stop")
    if verb == "stop":
        return pg_ctl(rest[-1], "--mode", "fast", "--wait", "stop")
    if verb == "start":
        log_file = nodes[rest[-1]]["env"]["LOG_FILE"]
        return pg_ctl(rest[-1], "--wait", f"--log={log_file}", "start")
    if verb == "ps":
        for service in nodes:
            if pg_ctl(service, "status") == 0:
                print(service)
        return 0
    if verb == "run":
        service, script = rest[rest.index("-c") - 1], rest[rest.index("-c") + 1]
        extra = dict(rest[i + 1].split("=", 1) for i, a in enumerate(rest) if a == "-e")
        env = {**nodes[service]["env"], **extra}
        script = script.replace("/replikit/scripts", env["SCRIPTS"])
        result = user.run(["sh", "-c", script], env=env, what="run", check=False)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode
    print(f"fake docker: unsupported {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
