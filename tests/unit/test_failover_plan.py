"""Which failover experiment the options and the existing cluster ask for, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.experiments.failover_plan import (
    FailoverMode,
    FailoverPlan,
    Fault,
    check_timing,
    plan_failover,
)
from replication.errors import BadInputError
from replication.topology import Manager, PatroniSettings, SyncMode, build_state, save_state


def recorded(tmp_path: Path, manager: Manager, ttl: int = 20) -> Path:
    state = build_state(
        replicas=2, sync=SyncMode.ON, base_port=7000, pg_bin=Path("/x"), pg_major=15
    )
    state.manager = manager
    if manager is Manager.PATRONI:
        state.patroni = PatroniSettings(
            etcd_client_ports=[1, 2, 3],
            etcd_peer_ports=[4, 5, 6],
            rest_ports={"pg0": 7, "pg1": 8, "pg2": 9},
            rest_password="x",
            ttl=ttl,
            loop_wait=1,
            retry_timeout=5,
            python="/x/python",
        )
    save_state(tmp_path, state)
    return tmp_path


def test_defaults_keep_the_manual_experiment_on_a_new_directory(tmp_path: Path) -> None:
    assert plan_failover(tmp_path, manager=None, mode=None, fault=None) == FailoverPlan()


@pytest.mark.parametrize(("manager", "mode"), [(Manager.PATRONI, None), (None, FailoverMode.AUTO)])
def test_patroni_or_auto_alone_means_an_automatic_node_fault(
    tmp_path: Path, manager: Manager | None, mode: FailoverMode | None
) -> None:
    plan = plan_failover(tmp_path, manager=manager, mode=mode, fault=None)
    assert plan == FailoverPlan(Manager.PATRONI, FailoverMode.AUTO, Fault.NODE)


def test_an_existing_patroni_cluster_runs_auto_without_options(tmp_path: Path) -> None:
    data_dir = recorded(tmp_path, Manager.PATRONI)
    plan = plan_failover(data_dir, manager=None, mode=None, fault=Fault.POSTGRES)
    assert plan == FailoverPlan(Manager.PATRONI, FailoverMode.AUTO, Fault.POSTGRES)


@pytest.mark.parametrize(
    ("existing", "manager", "mode", "fault", "says"),
    [
        (None, Manager.NATIVE, FailoverMode.AUTO, None, "--manager patroni"),
        (Manager.NATIVE, None, FailoverMode.AUTO, None, "--manager patroni"),
        (None, Manager.PATRONI, FailoverMode.MANUAL, None, "--mode auto"),
        (None, None, None, Fault.POSTGRES, "--fault applies to --mode auto"),
        (Manager.NATIVE, Manager.PATRONI, None, None, "managed by native"),
        (Manager.PATRONI, Manager.NATIVE, None, None, "managed by patroni"),
    ],
)
def test_combinations_that_cannot_run_are_refused_with_the_fix(
    tmp_path: Path,
    existing: Manager | None,
    manager: Manager | None,
    mode: FailoverMode | None,
    fault: Fault | None,
    says: str,
) -> None:
    data_dir = recorded(tmp_path, existing) if existing is not None else tmp_path
    with pytest.raises(BadInputError, match=says):
        plan_failover(data_dir, manager=manager, mode=mode, fault=fault)


def test_a_node_fault_needs_the_lease_inside_the_load(tmp_path: Path) -> None:
    data_dir = recorded(tmp_path, Manager.PATRONI, ttl=30)
    node = FailoverPlan(Manager.PATRONI, FailoverMode.AUTO, Fault.NODE)
    with pytest.raises(BadInputError, match=r"at least 35 s .*ttl \(30 s\)"):
        check_timing(node, data_dir, duration=40, kill_at=10)
    check_timing(node, data_dir, duration=45, kill_at=10)
    crash = FailoverPlan(Manager.PATRONI, FailoverMode.AUTO, Fault.POSTGRES)
    check_timing(crash, data_dir, duration=14, kill_at=4)
    with pytest.raises(BadInputError, match="inside --duration"):
        check_timing(crash, data_dir, duration=14, kill_at=14)
