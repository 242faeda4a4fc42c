"""Step profile: REPLIKIT_PEAK_USERS (20) reached in REPLIKIT_STAGES (4) steps of
REPLIKIT_STAGE_SECONDS (15), then held one more stage."""

from locust import LoadTestShape

from loadtests.shapes.profiles import env_int, step_stages, tick


class StepShape(LoadTestShape):
    stages = step_stages(
        env_int("REPLIKIT_PEAK_USERS", 20),
        env_int("REPLIKIT_STAGES", 4),
        env_int("REPLIKIT_STAGE_SECONDS", 15),
    )

    def tick(self) -> tuple[int, float] | None:
        return tick(self.stages, self.get_run_time())
