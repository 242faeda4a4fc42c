"""The failover benchmark's planning, its report, and what it does to a compose HA stack,
without building any cluster: the options it accepts and refuses (one sentence each), the
order of its rounds, the report's medians and ratios, and the Docker steps of each fault."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.benchmarks import failover_targets
from loadtests.benchmarks.failover import parse_plan
from loadtests.benchmarks.failover_options import (
    Fault,
    Measure,
    PlanError,
    Step,
    Target,
    Via,
    make_plan,
)
from loadtests.benchmarks.failover_report import FailoverReport, RoundResult
from loadtests.benchmarks.failover_targets import HaTarget
from replication.compose.env import read_env
from replication.compose.stack import ComposeStack, Variant
from replication.topology import SyncMode


def test_defaults_are_five_rounds_of_a_native_node_fault_through_the_cli() -> None:
    plan = parse_plan([])
    assert plan.targets == (Target.NATIVE,)
    assert plan.measure is Measure.UPLOAD
    assert plan.sync is SyncMode.ON
    assert plan.schedule() == [Step(Target.NATIVE, Fault.NODE, Via.CLI)] * 5


def test_rounds_alternate_targets_faults_and_ways_within_each_round() -> None:
    plan = parse_plan(["--target", "native", "--target", "compose", "--rounds", "2"])
    native, compose = (
        Step(Target.NATIVE, Fault.NODE, Via.CLI),
        Step(Target.COMPOSE, Fault.NODE, Via.CLI),
    )
    assert plan.schedule() == [native, compose, native, compose]

    patroni = parse_plan(["--target", "patroni", "--rounds", "1"])
    assert [s.fault for s in patroni.schedule()] == [Fault.POSTGRES, Fault.NODE]

    ha = parse_plan(["--target", "compose-ha", "--rounds", "1"])
    assert [s.fault for s in ha.schedule()] == [Fault.NODE, Fault.PARTITION]

    ways = parse_plan(
        [
            "--measure",
            "write",
            "--via",
            "cli",
            "--via",
            "in-process",
            "--switchover",
            "--rounds",
            "1",
        ]
    )
    assert [s.via for s in ways.schedule()] == [Via.CLI, Via.IN_PROCESS]
    assert ways.switchover


def test_a_fault_option_keeps_only_that_fault() -> None:
    plan = parse_plan(["--target", "patroni", "--fault", "postgres", "--rounds", "3"])
    assert {s.fault for s in plan.schedule()} == {Fault.POSTGRES}
    assert len(plan.schedule()) == 3


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["--target", "native", "--fault", "postgres"],
            "--fault postgres does not apply to --target native",
        ),
        (["--target", "compose-ha", "--fault", "postgres"], "its faults: node, partition"),
        (["--target", "native", "--fault", "partition"], "drop one of the two"),
        (
            ["--target", "patroni", "--measure", "write"],
            "--measure write does not run on --target patroni",
        ),
        (["--target", "compose-ha", "--measure", "phases"], "it takes upload"),
        (["--target", "native", "--measure", "phases"], "--measure phases does not run"),
        (["--target", "patroni", "--via", "in-process"], "drop --via in-process"),
        (["--target", "compose-ha", "--via", "in-process"], "drop --via in-process"),
        (["--switchover"], "add --measure write"),
        (["--target", "compose-ha", "--sync", "off"], "use --sync on"),
        (["--rounds", "0"], "--rounds must be 1 or more"),
        (["--measure", "phases", "--target", "patroni", "--users", "0"], "--users must be 1"),
    ],
)
def test_combinations_that_cannot_run_are_refused_in_one_sentence(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_plan(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert says in error
    assert error.endswith(".")


def test_an_unknown_target_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_plan(["--target", "kubernetes"])
    assert "kubernetes" in capsys.readouterr().err


def test_make_plan_accepts_what_each_target_supports() -> None:
    for target, measures in {
        Target.NATIVE: (Measure.UPLOAD, Measure.WRITE),
        Target.COMPOSE: (Measure.UPLOAD, Measure.WRITE),
        Target.PATRONI: (Measure.UPLOAD, Measure.PHASES),
        Target.COMPOSE_HA: (Measure.UPLOAD,),
    }.items():
        for measure in measures:
            assert make_plan(targets=[target], measure=measure).targets == (target,)
    with pytest.raises(PlanError):
        make_plan(targets=[Target.NATIVE, Target.PATRONI], faults=[Fault.POSTGRES])


def recorded_report(tmp_path: Path, lines: list[str]) -> FailoverReport:
    plan = make_plan(targets=[Target.NATIVE, Target.COMPOSE], rounds=3, results_dir=tmp_path)
    report = FailoverReport(plan, tmp_path / "failover.json", log=lines.append)
    windows = {Target.NATIVE: [1.0, 3.0, 2.0], Target.COMPOSE: [3.0, 2.0, 4.0]}
    for number in range(3):
        for target in plan.targets:
            step = Step(target, Fault.NODE, Via.CLI)
            result = RoundResult(
                windows[target][number], "pg0", "pg1", 100, number % 2, {"fault_command": 0.5}
            )
            report.add(number + 1, step, result)
    return report


def test_the_report_gives_medians_lost_uploads_and_the_ratio_to_the_first_target(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    report = recorded_report(tmp_path, lines)
    report.finish()

    assert lines[0].startswith("round 1 native     node      fault -> first acked upload   1.00 s")
    assert "(leader pg0 -> pg1; 100 acked, 0 lost;" in lines[0]
    assert lines[0].endswith("fault_command 0.50")
    medians = report.medians()
    assert medians["native node"]["window"] == 2.0
    assert (medians["native node"]["min"], medians["native node"]["max"]) == (1.0, 3.0)
    assert medians["native node"]["lost"] == 1
    assert medians["compose node"]["window"] == 3.0
    assert report.ratios(medians) == {"compose / native (node)": 1.5}
    assert "compose / native (node) 1.50" in lines

    saved = json.loads((tmp_path / "failover.json").read_text())
    assert len(saved["rounds"]) == 6
    assert saved["rounds"][1]["target"] == "compose"
    assert saved["ratios"] == {"compose / native (node)": 1.5}
    assert saved["window_ends_at"] == "first acked upload"


def test_a_round_without_uploads_reports_no_lost_count(tmp_path: Path) -> None:
    lines: list[str] = []
    plan = make_plan(targets=[Target.NATIVE], measure=Measure.WRITE, rounds=1)
    report = FailoverReport(plan, tmp_path / "failover.json", log=lines.append)
    report.add(1, Step(Target.NATIVE, Fault.NODE, Via.CLI), RoundResult(None, "pg0", "pg0"))
    report.finish()
    assert "fault -> first write      — s  (leader pg0 -> pg0; load" in lines[0]
    assert report.medians()["native node"]["lost"] is None
    assert "lost" not in lines[1]


class FakeHa:
    """Records the Docker steps HaTarget asks of the HA stack."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def wait_settled(self) -> str:
        self.calls.append(("wait_settled",))
        return "pg1"

    def crash(self, node: str) -> None:
        self.calls.append(("crash", node))

    def partition(self, node: str) -> list[str]:
        self.calls.append(("partition", node))
        return ["pg1", "pg1.peers"]

    def wait_writer(self, *, other_than: str) -> str:
        self.calls.append(("wait_writer", other_than))
        return "pg2"

    def start(self, node: str) -> None:
        self.calls.append(("start", node))

    def reconnect(self, node: str, aliases: list[str]) -> None:
        self.calls.append(("reconnect", node, *aliases))

    def wait_rejoined(self, node: str) -> None:
        self.calls.append(("wait_rejoined", node))


@pytest.mark.parametrize(
    ("fault", "breaks", "heals"),
    [
        (Fault.NODE, ("crash", "pg1"), ("start", "pg1")),
        (Fault.PARTITION, ("partition", "pg1"), ("reconnect", "pg1", "pg1", "pg1.peers")),
    ],
)
def test_the_ha_target_breaks_and_heals_the_leader_with_docker(
    fault: Fault, breaks: tuple[str, ...], heals: tuple[str, ...]
) -> None:
    fake = FakeHa()
    target = HaTarget(fake, "http://127.0.0.1:1")  # type: ignore[arg-type]
    leader = target.leader()
    injected = target.inject(Step(Target.COMPOSE_HA, fault, Via.CLI), leader)
    assert injected.old_leader == "pg1"
    assert injected.done_at >= injected.issued_at
    assert injected.failover_seconds is None  # the agents fail over, no command
    assert target.leader_after("pg1") == "pg2"
    target.heal(fault, "pg1")
    assert fake.calls == [
        ("wait_settled",),
        breaks,
        ("wait_writer", "pg1"),
        heals,
        ("wait_rejoined", "pg1"),
    ]


def test_the_compose_targets_plan_stacks_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which stack each compose target brings up, with which settings, and how the default
    one is attached: the Docker and CLI steps are recorded instead of run (the real ones are
    covered by tests/compose)."""
    stacks: list[ComposeStack] = []
    commands: list[tuple[str, ...]] = []

    @contextlib.contextmanager
    def recorded_stack(stack: ComposeStack, *, build: bool) -> Iterator[ComposeStack]:
        assert not build
        stacks.append(stack)
        yield stack

    monkeypatch.setattr(failover_targets, "running_stack", recorded_stack)

    def recorded_replikit(*args: str) -> str:
        commands.append(args)
        return ""

    monkeypatch.setattr(failover_targets, "replikit", recorded_replikit)
    plan = parse_plan(["--target", "compose", "--target", "compose-ha", "--no-build"])

    with failover_targets.built(Target.COMPOSE, tmp_path, plan, 26000) as compose:
        assert isinstance(compose, failover_targets.ManagedCluster)
        assert compose.data_dir == tmp_path / "compose"
    with failover_targets.built(Target.COMPOSE_HA, tmp_path, plan, 26000) as ha:
        assert isinstance(ha, HaTarget)

    default, high_availability = stacks
    assert default.variant is Variant.DEFAULT
    assert high_availability.variant is Variant.HA
    assert default.project_name != high_availability.project_name
    settings = read_env(default.env_file)
    assert settings["REPLIKIT_SYNC_MODE"] == "on"
    assert settings["REPLIKIT_UPLOAD_RATE_LIMIT"] == "0"
    assert read_env(high_availability.env_file)["REPLIKIT_UPLOAD_RATE_LIMIT"] == "0"
    http_port = read_env(high_availability.env_file)["REPLIKIT_HTTP_PORT"]
    assert ha.service_url() == f"http://127.0.0.1:{http_port}"
    (attach,) = commands
    assert attach[:2] == ("cluster", "attach-compose")
    assert str(default.env_file) in attach
    assert default.project_name in attach
