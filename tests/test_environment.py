"""The SDK settings read from a mapping: what each standard variable gives, and what is refused."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, TraceBasedExemplarFilter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON, ParentBasedTraceIdRatio, TraceIdRatioBased

from otel.environment import BatchSettings, batch_settings, exemplar_filter, resource_attributes, sampler


class TestSampler:
    def test_unset_is_parent_based_always_on(self) -> None:
        assert sampler({}) is DEFAULT_ON

    def test_named(self) -> None:
        assert sampler({"OTEL_TRACES_SAMPLER": " Always_Off "}) is ALWAYS_OFF

    def test_ratio(self) -> None:
        chosen = sampler({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
        assert isinstance(chosen, ParentBasedTraceIdRatio)
        assert "0.25" in chosen.get_description()

    def test_ratio_defaults_to_one(self) -> None:
        chosen = sampler({"OTEL_TRACES_SAMPLER": "traceidratio"})
        assert isinstance(chosen, TraceIdRatioBased)
        assert chosen.rate == 1.0

    @pytest.mark.parametrize("arg", ["1.5", "-0.1", "half", "nan"])
    def test_bad_ratio(self, arg: str) -> None:
        with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1"):
            sampler({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": arg})


class TestBatchSettings:
    def test_defaults_are_the_specifications(self) -> None:
        assert batch_settings({}, "BSP") == BatchSettings(2048, 5000, 512, 30_000)
        assert batch_settings({}, "BLRP") == BatchSettings(2048, 1000, 512, 30_000)

    def test_each_variable(self) -> None:
        env = {
            "OTEL_BLRP_MAX_QUEUE_SIZE": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "250",
            "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "10",
            "OTEL_BLRP_EXPORT_TIMEOUT": "2000",
            "OTEL_BSP_MAX_QUEUE_SIZE": "7",  # another signal's: not read for logs
        }
        assert batch_settings(env, "BLRP") == BatchSettings(100, 250, 10, 2000)

    def test_batch_larger_than_queue(self) -> None:
        with pytest.raises(ValueError, match="OTEL_BSP_MAX_EXPORT_BATCH_SIZE=600 is larger than"):
            batch_settings({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "600", "OTEL_BSP_MAX_QUEUE_SIZE": "500"}, "BSP")

    @pytest.mark.parametrize("value", ["0", "-1", "1.5", "many"])
    def test_queue_must_be_a_positive_integer(self, value: str) -> None:
        with pytest.raises(ValueError, match="OTEL_BSP_MAX_QUEUE_SIZE must be a positive integer"):
            batch_settings({"OTEL_BSP_MAX_QUEUE_SIZE": value}, "BSP")


class TestResourceAttributes:
    def test_percent_decoded_and_service_name_wins(self) -> None:
        env = {
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=inner, team=a%2Cb ,broken,=x",
            "OTEL_SERVICE_NAME": "outer",
        }
        assert resource_attributes(env) == {"service.name": "outer", "team": "a,b"}

    def test_empty(self) -> None:
        assert resource_attributes({}) == {}


class TestExemplarFilter:
    def test_default_is_trace_based(self) -> None:
        assert isinstance(exemplar_filter({}), TraceBasedExemplarFilter)

    def test_named(self) -> None:
        assert isinstance(exemplar_filter({"OTEL_METRICS_EXEMPLAR_FILTER": "always_on"}), AlwaysOnExemplarFilter)
