"""Spike profile: REPLIKIT_BASE_USERS (5), a spike to REPLIKIT_PEAK_USERS (40) in the middle
third of REPLIKIT_SHAPE_SECONDS (60)."""

from locust import LoadTestShape

from loadtests.shapes.profiles import env_int, spike_stages, tick


class SpikeShape(LoadTestShape):
    stages = spike_stages(
        env_int("REPLIKIT_BASE_USERS", 5),
        env_int("REPLIKIT_PEAK_USERS", 40),
        env_int("REPLIKIT_SHAPE_SECONDS", 60),
    )

    def tick(self) -> tuple[int, float] | None:
        return tick(self.stages, self.get_run_time())
