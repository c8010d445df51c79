"""The [diagnosis] section: device events in, diagnoses out."""

from __future__ import annotations

from pydantic import Field, model_validator

from gateway.config.base import Section, TopicTemplate


class DiagnosisConfig(Section):
    """Device events to retained diagnoses for SCADA (see docs/contract.md)."""

    enabled: bool = True
    event_topic: TopicTemplate = Field(
        default="edge/{site}/device/+/event",
        description="MQTT subscription for device events; the single `+` level is the device id.",
    )
    diagnosis_topic: TopicTemplate = Field(
        default="edge/{site}/diagnosis/{device_id}",
        description="Retained: the device's headline diagnosis (most severe active alarm).",
    )
    alarm_topic: TopicTemplate = Field(
        default="edge/{site}/diagnosis/{device_id}/{code}",
        description="Retained: the diagnosis of one alarm of the device (active or cleared).",
    )
    nats_event_subject: TopicTemplate = Field(
        default="edge.{site}.device.*.event",
        description="NATS subject for device events; the `*` token is the device id.",
    )
    nats_diagnosis_subject: TopicTemplate = "edge.{site}.diagnosis.{device_id}"
    nats_alarm_subject: TopicTemplate = "edge.{site}.diagnosis.{device_id}.{code}"
    owner_timeout_s: float = Field(
        default=45.0,
        gt=0,
        description=(
            "An instance whose last status or health message is older than this is dead: its "
            "devices move to the next instance (MQTT's Last Will says so at once; NATS has none)."
            " Keep it above a few health.interval_s."
        ),
    )
    coalesce_window_s: float = Field(
        default=2.0,
        ge=0.0,
        le=3_600.0,
        description="Identical alarms (device, code) within this window become one diagnosis.",
    )
    rate_per_minute: float = Field(
        default=12.0, gt=0, description="Diagnoses per device per minute (token bucket)."
    )
    rate_burst: int = Field(default=4, ge=1, description="Diagnoses a device may have at once.")
    rate_max_delay_s: float = Field(
        default=120.0, ge=0, description="A diagnosis postponed further than this is refused."
    )
    max_open_windows: int = Field(
        default=1_024, ge=1, le=1_000_000, description="Past this, new alarms are counted, dropped."
    )
    max_devices: int = Field(default=4_096, ge=1, le=1_000_000)
    max_alarms_per_device: int = Field(default=32, ge=1, le=1_024)
    cache_ttl_s: float = Field(
        default=600.0, ge=0, description="Reuse a diagnosis this long if the KB is unchanged."
    )
    cache_max_entries: int = Field(default=4_096, ge=1, le=1_000_000)
    max_tokens: int = Field(default=200, ge=16, le=4_096)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    similarity_threshold: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="Unset: kb.similarity_threshold."
    )
    require_code_match: bool = Field(
        default=True, description="Only chunks that mention the alarm code count as knowledge."
    )
    fallback_summary: str = Field(
        default="The knowledge base has nothing on this alarm. Please contact technical support.",
        min_length=1,
        max_length=1_024,
    )
    fallback_action: str = Field(
        default="Contact technical support",
        min_length=1,
        max_length=48,
        pattern=r'^[^"\\\x00-\x1f]+$',
    )

    @model_validator(mode="after")
    def _one_device_wildcard(self) -> DiagnosisConfig:
        levels = self.event_topic.split("/")
        if levels.count("+") != 1 or "#" in levels:
            raise ValueError("event_topic must contain exactly one '+' level (the device id)")
        if self.nats_event_subject.split(".").count("*") != 1:
            raise ValueError("nats_event_subject must contain exactly one '*' token")
        for name in ("diagnosis_topic", "alarm_topic"):
            if "{device_id}" not in getattr(self, name):
                raise ValueError(f"{name} must contain {{device_id}}")
        if "{code}" not in self.alarm_topic:
            raise ValueError("alarm_topic must contain {code}")
        return self
