"""``replikit experiment ...``: failover, replica-lag, consistency, soak, overload and restore
experiments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from loadtests.experiments.failover_plan import FailoverMode, Fault, plan_failover
from replication.cli.output import DataDirOption, ResultsOption, comma_separated, show_results
from replication.cluster import DEFAULT_DATA_DIR
from replication.topology import Manager, SyncMode

experiment_app = typer.Typer(
    help="Failover, replica-lag, consistency, soak, overload and restore experiments.",
    no_args_is_help=True,
)


def exit_unless_passed(out: Path) -> None:
    """A failed check fails the command (make soak-ci, make restore-experiment, CI jobs)."""
    if json.loads((out / "summary.json").read_text())["verdict"] != "pass":
        raise typer.Exit(1)


@experiment_app.command("failover")
def experiment_failover(
    users: Annotated[int, typer.Option(help="Locust users in all.", min=2)] = 10,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 40.0,
    kill_at: Annotated[
        float, typer.Option(help="Seconds into the load to crash the primary.")
    ] = 15.0,
    sync: Annotated[SyncMode, typer.Option(help="Sync mode of a new cluster.")] = SyncMode.ON,
    mode: Annotated[
        FailoverMode | None,
        typer.Option(
            help="Who fails over: manual (the experiment runs cluster failover; native "
            "clusters) or auto (Patroni, unprompted). Default: follows the manager."
        ),
    ] = None,
    manager: Annotated[
        Manager | None,
        typer.Option(help="Manager of a new cluster (default: as the existing one, else native)."),
    ] = None,
    fault: Annotated[
        Fault | None,
        typer.Option(
            help="--mode auto only: node (agent and PostgreSQL, a lost machine; the default) "
            "or postgres (PostgreSQL crashes under a live agent)."
        ),
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    results: ResultsOption = Path("results"),
) -> None:
    """Crash the primary under load, fail over, and measure what clients and the database saw."""
    from loadtests.experiments.common import cluster_for_experiment
    from loadtests.experiments.failover import run_failover

    plan = plan_failover(data_dir.absolute(), manager=manager, mode=mode, fault=fault)
    with cluster_for_experiment(data_dir.absolute()):
        out = run_failover(
            data_dir=data_dir.absolute(),
            results=results,
            users=users,
            duration=duration,
            kill_at=kill_at,
            sync=sync,
            plan=plan,
        )
    show_results(out)


@experiment_app.command("lag")
def experiment_lag(
    apply_delay: Annotated[
        str, typer.Option(help="Comma-separated replay delays, e.g. 0,250ms,1s.")
    ] = "0,250ms,1s",
    consistency: Annotated[
        str,
        typer.Option(
            help="Comma-separated modes: eventual,bounded,read_your_writes,monotonic,strong."
        ),
    ] = "eventual,bounded,read_your_writes",
    users: Annotated[int, typer.Option(help="Locust users per cell.", min=2)] = 8,
    duration: Annotated[float, typer.Option(help="Seconds per cell.")] = 15.0,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    results: ResultsOption = Path("results"),
) -> None:
    """Run read-after-upload and browse load for each (replay delay, consistency) cell."""
    from loadtests.experiments.common import cluster_for_experiment
    from loadtests.experiments.lag import run_lag

    with cluster_for_experiment(data_dir.absolute()):
        out = run_lag(
            data_dir=data_dir.absolute(),
            results=results,
            delays=comma_separated(apply_delay),
            modes=comma_separated(consistency),
            users=users,
            seconds_per_cell=duration,
        )
    show_results(out)


@experiment_app.command("consistency")
def experiment_consistency(
    consistency: Annotated[
        str, typer.Option(help="Comma-separated modes, run in turn.")
    ] = "eventual,bounded,read_your_writes,monotonic,strong",
    apply_delay: Annotated[
        str,
        typer.Option(
            help="Replay delay of each replica in node order, comma-separated (the last "
            "repeats), e.g. 0,1500ms."
        ),
    ] = "0,1500ms",
    clients: Annotated[int, typer.Option(help="Clients, each with its own token.", min=1)] = 6,
    readers: Annotated[
        int, typer.Option(help="How many of the clients only read (never write).", min=0)
    ] = 2,
    instances: Annotated[
        int, typer.Option(help="Service instances the clients alternate between.", min=1)
    ] = 2,
    duration: Annotated[float, typer.Option(help="Seconds per mode.", min=0.5)] = 8.0,
    think: Annotated[str, typer.Option(help="Pause between a client's requests.")] = "25ms",
    failover: Annotated[
        bool, typer.Option("--failover", help="Crash the primary half-way through each mode.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the clients' choices.")] = 1,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    results: ResultsOption = Path("results"),
) -> None:
    """Count read-your-writes and monotonic-read anomalies and lost writes per consistency
    mode, with clients spread over several instances and replicas that disagree."""
    from loadtests.experiments.common import cluster_for_experiment
    from loadtests.experiments.consistency import ConsistencyRun, run_consistency

    run = ConsistencyRun.parse(
        modes=comma_separated(consistency),
        delays=comma_separated(apply_delay),
        clients=clients,
        readers=readers,
        seconds_per_mode=duration,
        think=think,
        instances=instances,
        failover=failover,
        seed=seed,
    )
    with cluster_for_experiment(data_dir.absolute()):
        out = run_consistency(data_dir=data_dir.absolute(), results=results, run=run)
    show_results(out)


@experiment_app.command("soak")
def experiment_soak(
    duration: Annotated[
        str, typer.Option(help="How long the load runs: 60m, 3m, 90s (at least 60s).")
    ] = "60m",
    seed: Annotated[int, typer.Option(help="Seed of the fault schedule and the clients.")] = 1,
    fault_every: Annotated[
        str, typer.Option(help="Mean interval between faults (each 0.5-1.5 times it).")
    ] = "5m",
    consistency: Annotated[
        str, typer.Option(help="Comma-separated modes; each gets --clients clients.")
    ] = "read_your_writes,monotonic,strong,eventual",
    clients: Annotated[int, typer.Option(help="Clients per mode, each with its token.")] = 2,
    readers: Annotated[
        int, typer.Option(help="How many of each mode's clients only browse.", min=0)
    ] = 1,
    instances: Annotated[
        int, typer.Option(help="Service instances on a local cluster.", min=1)
    ] = 2,
    think: Annotated[str, typer.Option(help="Pause between a client's requests.")] = "150ms",
    settle: Annotated[
        str, typer.Option(help="Margin after the cluster is whole that still counts as the fault.")
    ] = "5s",
    sample_every: Annotated[str, typer.Option(help="Interval of the resource watch.")] = "10s",
    sync: Annotated[SyncMode, typer.Option(help="Sync mode of a new cluster.")] = SyncMode.ON,
    manager: Annotated[
        Manager | None,
        typer.Option(help="Manager of a new cluster (default: as the existing one, else native)."),
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    results: ResultsOption = Path("results"),
) -> None:
    """Run steady load under seeded faults, then check promises, lost writes, errors outside
    faults and growth of every watched resource."""
    from loadtests.experiments.common import cluster_for_experiment
    from loadtests.experiments.soak import SoakRun, run_soak

    run = SoakRun.parse(
        duration=duration,
        seed=seed,
        fault_every=fault_every,
        modes=comma_separated(consistency),
        clients=clients,
        readers=readers,
        instances=instances,
        think=think,
        settle=settle,
        sample_every=sample_every,
    )
    with cluster_for_experiment(data_dir.absolute()):
        out = run_soak(
            data_dir=data_dir.absolute(), results=results, run=run, sync=sync, manager=manager
        )
    show_results(out)
    exit_unless_passed(out)


@experiment_app.command("restore")
def experiment_restore(
    before: Annotated[float, typer.Option(help="Seconds of uploads before the mistake.")] = 10.0,
    after: Annotated[float, typer.Option(help="Seconds of uploads after the mistake.")] = 4.0,
    mistake: Annotated[
        str,
        typer.Option(
            help="sql (DELETE FROM images as the schema's owner) or api (every image "
            "uploaded so far deleted through the API)."
        ),
    ] = "sql",
    clients: Annotated[int, typer.Option(help="Clients uploading one image at a time.")] = 2,
    instances: Annotated[int, typer.Option(help="Service instances to start.")] = 1,
    restore_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the restored cluster goes (default: beside --data-dir, "
            "removed at the end unless --keep-restored)."
        ),
    ] = None,
    keep_restored: Annotated[
        bool, typer.Option("--keep-restored", help="Leave the restored cluster running.")
    ] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    results: ResultsOption = Path("results"),
) -> None:
    """Upload under load, delete every image by mistake at T, restore to just before T into a
    new cluster, and check which acknowledged uploads came back (a cluster built with
    'replikit cluster up --archive'; a new one is)."""
    from loadtests.experiments.common import cluster_for_experiment
    from loadtests.experiments.restore import Mistake, RestoreRun, run_restore
    from replication.errors import BadInputError

    if mistake not in {m.value for m in Mistake}:
        raise BadInputError(f"--mistake takes sql or api, not {mistake!r}.")
    run = RestoreRun(
        before_seconds=before,
        after_seconds=after,
        clients=clients,
        instances=instances,
        mistake=Mistake(mistake),
        restore_dir=restore_dir,
        keep_restored=keep_restored,
    )
    with cluster_for_experiment(data_dir.absolute()):
        out = run_restore(data_dir=data_dir.absolute(), results=results, run=run)
    show_results(out)
    exit_unless_passed(out)


QUICK_MULTIPLES = "0.5,2,4"


@experiment_app.command("overload")
def experiment_overload(
    instances: Annotated[
        int, typer.Option(help="Service instances to start (local cluster only).", min=1)
    ] = 2,
    multiples: Annotated[
        str, typer.Option(help="Comma-separated multiples of the sustainable rate to offer.")
    ] = "0.5,1,2,3,4",
    step: Annotated[float, typer.Option(help="Seconds of load per step.", min=1)] = 15.0,
    closed_loop: Annotated[
        float, typer.Option(help="Seconds of the closed-loop run that finds the sustainable rate.")
    ] = 8.0,
    rate: Annotated[
        float | None,
        typer.Option(help="Take this as the sustainable rate (req/s) instead of measuring it."),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE for the started instances, repeatable "
            "(e.g. REPLIKIT_ADAPTIVE_CONCURRENCY=false)."
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help=f"CI-sized: steps {QUICK_MULTIPLES} of 3 s, 3 s closed loop."),
    ] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    results: ResultsOption = Path("results"),
) -> None:
    """Offer open-loop load up to 4x what the service sustains and report goodput, latency,
    every refusal by code, and any PRIMARY_UNAVAILABLE / NO_READER while every node was up."""
    from loadtests.experiments.common import cluster_for_experiment
    from loadtests.experiments.overload import run_overload
    from replication.errors import BadInputError

    service_env: dict[str, str] = {}
    for pair in env or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"--env takes KEY=VALUE, not {pair!r}.")
        service_env[key.strip()] = value
    try:
        factors = [float(part) for part in comma_separated(QUICK_MULTIPLES if quick else multiples)]
    except ValueError:
        raise BadInputError(
            f"--multiples takes numbers like 0.5,1,2,3,4, not {multiples!r}."
        ) from None
    with cluster_for_experiment(data_dir.absolute()):
        out = run_overload(
            data_dir=data_dir.absolute(),
            results=results,
            instances=instances,
            multiples=factors,
            step_seconds=3.0 if quick else step,
            closed_loop_seconds=3.0 if quick else closed_loop,
            rate=rate,
            service_env=service_env,
        )
    show_results(out)
