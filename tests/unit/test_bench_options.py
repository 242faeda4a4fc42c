"""The side-by-side bench's options: what `replikit bench` passes keeps its meaning, and a run
can be narrowed to some configurations and workloads (the router against the pinned service)
without pgpool, stale reads or kills."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.benchmarks import routing
from loadtests.benchmarks.side_by_side import (
    CONFIGURATIONS,
    KILL_CONFIGURATIONS,
    WORKLOADS,
    parse_options,
)
from loadtests.benchmarks.wrk import multipart_file

ROUTER = "replikit round_robin eventual"


def test_the_cli_s_arguments_run_everything() -> None:
    options = parse_options(["--rounds", "2", "--seconds", "4", "--results-dir", "out"])
    assert (options.rounds, options.seconds, options.results_dir) == (2, 4.0, Path("out"))
    assert [c.name for c in options.chosen()] == [c.name for c in CONFIGURATIONS]
    assert options.workloads == list(WORKLOADS)
    assert options.kill_configurations == list(KILL_CONFIGURATIONS)
    assert options.stale_samples == 20
    assert options.needs_pgpool


def test_quick_is_one_short_round_with_kills_for_two() -> None:
    options = parse_options(["--rounds", "3", "--quick"])
    assert (options.rounds, options.seconds, options.kill_seconds) == (1, 1.0, 4.0)
    assert options.kill_configurations == ["replikit round_robin read_your_writes", "pgpool"]
    assert options.stale_samples == 5


def test_a_run_narrows_to_the_router_against_the_pinned_service() -> None:
    narrowed = ["--configuration", "pinned", "--configuration", ROUTER, "--workload", "metadata"]
    options = parse_options([*narrowed, "--no-stale", "--no-kills"])
    assert [c.name for c in options.chosen()] == ["pinned", ROUTER]
    assert options.workloads == ["metadata"]
    assert options.stale_samples == 0
    assert options.kill_configurations == []
    assert not options.needs_pgpool


def test_kills_follow_the_chosen_configurations() -> None:
    options = parse_options(["--configuration", "pinned", "--configuration", "pgpool"])
    assert options.kill_configurations == ["pinned", "pgpool"]
    assert options.needs_pgpool


def test_an_unknown_configuration_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_options(["--configuration", "haproxy"])
    assert exited.value.code == 2
    assert "haproxy" in capsys.readouterr().err


def test_the_routing_decision_is_timed_for_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    routing.main(["--calls", "50"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"routing decision ({mode.value})" for mode in routing.MODES
    ]
    with pytest.raises(SystemExit):
        routing.main(["--calls", "0"])


def test_the_multipart_body_carries_the_file_between_its_boundaries() -> None:
    body = multipart_file("b0undary", b"\xff\xd8jpeg", filename="x.jpg", content_type="image/jpeg")
    assert body.startswith(b'--b0undary\r\nContent-Disposition: form-data; name="file"; ')
    assert b'filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8jpeg\r\n' in body
    assert body.endswith(b"\r\n--b0undary--\r\n")
