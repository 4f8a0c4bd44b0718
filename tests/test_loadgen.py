"""`modellens loadgen` against the real service: bounded runs, drift of exactly the chosen features, bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from service.cli import main
from service.rehearsal.loadgen import LoadGenerator, Options
from service.rehearsal.scenarios import Phase, parse_schedule
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.test_serving import serve
from tests.test_stack_config import interpolate_values, read_env


class TestSchedule:
    """Schedules name scenarios and durations; mistakes are explained."""

    def test_parse(self) -> None:
        assert parse_schedule("steady:30, drift+feedback:60") == [
            Phase(frozenset({"steady"}), 30.0),
            Phase(frozenset({"drift", "feedback"}), 60.0),
        ]

    @pytest.mark.parametrize("text", ["steady", "nope:10", "steady:-1", "steady:soon", ":10"])
    def test_bad_schedules(self, text: str) -> None:
        with pytest.raises(ValueError, match="schedule part"):
            parse_schedule(text)

    def test_cli_rejects_unknown_scenario(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["loadgen", "--scenario", "chaos", "--url", "http://127.0.0.1:9"]) == 2
        assert "unknown scenario" in capsys.readouterr().err

    def test_readme_schedule_command_runs_until_it_needs_the_service(self, capsys: pytest.CaptureFixture[str]) -> None:
        # README's `modellens loadgen --url … --schedule default`, and compose's `--repeat 144`: both parse and
        # fail only for want of a service (exit 2 with a message, never a traceback).
        url = f"http://127.0.0.1:{free_port()}"
        assert main(["loadgen", "--url", url, "--schedule", "default"]) == 2
        assert main(["loadgen", "--url", url, "--schedule", "default", "--repeat", "144", "--rate", "5"]) == 2
        assert capsys.readouterr().err.count("cannot reach the service") == 2

    def test_compose_loadgen_command_is_accepted(self, capsys: pytest.CaptureFixture[str]) -> None:
        root = Path(__file__).parents[1]
        compose = yaml.safe_load((root / "docker-compose.yml").read_text())
        argv = interpolate_values(compose["services"]["loadgen"]["command"], read_env(root / ".env"))
        argv[argv.index("--url") + 1] = f"http://127.0.0.1:{free_port()}"
        assert main(argv) == 2
        assert "cannot reach the service" in capsys.readouterr().err

    @pytest.mark.parametrize("repeat", ["0", "-3", "many"])
    def test_repeat_must_be_a_positive_count(self, repeat: str, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(["loadgen", "--schedule", "default", "--repeat", repeat])
        assert exit_info.value.code == 2
        assert "--repeat" in capsys.readouterr().err

    def test_cli_reports_unreachable_service(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["loadgen", "--url", f"http://127.0.0.1:{free_port()}", "--duration", "1"]) == 2
        assert "cannot reach the service" in capsys.readouterr().err


@pytest.fixture
def service(regression_model_dir: Path) -> Iterator[tuple[str, ServiceProcess]]:
    port = free_port()
    with serve(regression_model_dir, port, None, MODELLENS_FAULTS="1", MODELLENS_DRIFT_WINDOW="1h") as process:
        yield f"http://127.0.0.1:{port}", process


@pytest.mark.slow
class TestAgainstTheService:
    """Real gunicorn, real HTTP."""

    def test_steady_run_stops_by_itself_at_the_rate(
        self, service: tuple[str, ServiceProcess], capsys: pytest.CaptureFixture[str]
    ) -> None:
        url, _ = service
        code = main(
            ["loadgen", "--url", url, "--scenario", "steady", "--rate", "20", "--duration", "5", "--json", "--quiet"]
        )
        assert code == 0
        summary = json.loads(capsys.readouterr().out)
        assert 80 <= summary["sent"] <= 120
        assert summary["ok"] == summary["sent"]
        assert 15 <= summary["rate"] <= 25
        assert summary["latency_ms"]["p50"] > 0

    def test_drift_raises_exactly_the_shifted_features(self, service: tuple[str, ServiceProcess]) -> None:
        url, _ = service
        generator = LoadGenerator(
            url,
            [Phase(frozenset({"drift"}), 6.0)],
            rate=40,
            options=Options(batch=10, drift_features=("bmi", "s5"), drift_shift=3.0),
            seed=1,
        )
        generator.run()
        summary = requests.get(f"{url}/monitoring", timeout=10).json()
        drifted = {name for name, feature in summary["features"].items() if feature["psi"] > 0.25}
        assert drifted == {"bmi", "s5"}
        assert all(feature["psi"] < 0.1 for name, feature in summary["features"].items() if name not in drifted)

    def test_label_drift_moves_the_ground_truth_and_nothing_else(self, service: tuple[str, ServiceProcess]) -> None:
        url, _ = service
        generator = LoadGenerator(
            url,
            [Phase(frozenset({"steady", "feedback", "label-drift"}), 6.0)],
            rate=40,
            options=Options(batch=5, drift_shift=3.0, feedback_delay=0.2),
            seed=2,
        )
        assert generator.run().feedback["accepted"] >= 400
        summary = requests.get(f"{url}/monitoring", timeout=10).json()
        assert summary["label_drift"]["status"] == "drift"
        assert {feature["status"] for feature in summary["features"].values()} <= {"stable", "insufficient_data"}

    def test_bad_input_is_answered_with_problems_and_counted(self, service: tuple[str, ServiceProcess]) -> None:
        url, _ = service
        generator = LoadGenerator(
            url, [Phase(frozenset({"bad-input"}), 4.0)], rate=50, options=Options(bad_fraction=0.5), seed=2
        )
        summary = generator.run().as_dict()
        bad = summary["bad_input_sent"]
        rejected = sum(n for kind, n in bad.items() if kind != "out_of_range")
        assert rejected > 10
        assert summary["by_status"].get("400", 0) == bad.get("malformed", 0)
        assert summary["by_status"].get("422", 0) == rejected - bad.get("malformed", 0)
        monitoring = requests.get(f"{url}/monitoring", timeout=10).json()
        # Rejected rows are counted except malformed bodies, which have no rows to count.
        assert monitoring["rows_rejected"] == rejected - bad.get("malformed", 0)
        above = sum(f["quality_issues"].get("above_max", 0) for f in monitoring["features"].values())
        assert above >= bad.get("out_of_range", 0)

    def test_latency_spike_slows_requests_when_faults_are_on(self, service: tuple[str, ServiceProcess]) -> None:
        url, process = service
        generator = LoadGenerator(
            url,
            [Phase(frozenset({"latency-spike"}), 3.0)],
            rate=20,
            options=Options(spike_fraction=0.5, spike_delay=0.3),
            seed=3,
        )
        summary = generator.run()
        assert summary.spikes_sent > 5
        slow = [latency for latency in summary.latencies if latency >= 0.3]
        assert len(slow) == summary.spikes_sent == summary.spikes_slowed
        assert "no spike took effect" not in summary.render()
        fault_lines = [line for line in process.stdout_lines() if '"fault injected"' in line]
        assert len(fault_lines) == summary.spikes_sent
        assert all('"trace_id"' in line for line in fault_lines)


@pytest.mark.slow
def test_latency_spike_against_a_service_without_faults_says_so(regression_model_dir: Path) -> None:
    port = free_port()
    with serve(regression_model_dir, port, None, MODELLENS_FAULTS="0"):
        generator = LoadGenerator(
            f"http://127.0.0.1:{port}",
            [Phase(frozenset({"latency-spike"}), 2.0)],
            rate=10,
            options=Options(spike_fraction=0.5, spike_delay=0.3),
            seed=3,
        )
        summary = generator.run()
    assert summary.spikes_sent > 3 and summary.spikes_slowed == 0
    assert "no spike took effect: the service ignores X-Modellens-Fault unless it runs with MODELLENS_FAULTS=1" in (
        summary.render()
    )


@pytest.mark.slow
def test_feedback_scenario_produces_realized_performance(service: tuple[str, ServiceProcess]) -> None:
    """Ground truth sent a second after each prediction joins and shows up as realized performance."""
    url, _ = service
    generator = LoadGenerator(
        url, [Phase(frozenset({"steady", "feedback"}), 5.0)], rate=20, options=Options(feedback_delay=1.0), seed=4
    )
    summary = generator.run().as_dict()
    assert summary["feedback"]["accepted"] >= 40  # everything due before the end of the run
    assert summary["feedback"]["accepted"] == summary["feedback"]["sent"]
    realized = requests.get(f"{url}/monitoring", timeout=10).json()["realized_performance"]
    assert realized["labels"] == summary["feedback"]["accepted"]
    assert realized["mae"] > 0


@pytest.mark.slow
def test_a_token_file_lets_loadgen_through_a_secured_service(
    regression_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# loadgen\n" + "t" * 32 + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run = ["loadgen", "--url", url, "--scenario", "steady,feedback", "--rate", "10", "--duration", "2"]
    run += ["--feedback-delay", "0.2", "--json", "--quiet"]
    with serve(regression_model_dir, port, None, MODELLENS_AUTH_TOKENS_FILE=str(tokens)):
        assert main(run[:-2]) == 0  # the human summary says what is missing
        assert "pass --token-file" in capsys.readouterr().out
        assert main(run) == 0
        refused = json.loads(capsys.readouterr().out)
        assert main([*run, "--token-file", str(tokens)]) == 0
        allowed = json.loads(capsys.readouterr().out)
    assert set(refused["by_status"]) == {"401"}
    assert set(allowed["by_status"]) == {"200"} and allowed["ok"] > 10
    assert allowed["feedback"].get("accepted", 0) > 0, allowed["feedback"]
