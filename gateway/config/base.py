"""What every configuration section shares: unknown keys refused, secrets read from files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

ENV_PREFIX = "EDGE_GATEWAY_"
DEFAULT_CONFIG_PATHS = (Path("/etc/edge-gateway/gateway.toml"),)

Port = Annotated[int, Field(ge=1, le=65_535)]
TopicTemplate = Annotated[str, Field(min_length=1, max_length=512)]


class Section(BaseModel):
    """Every section refuses unknown keys: a misspelt option is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def read_secret_file(path: Path) -> SecretStr:
    """Read a secret file; a bare name resolves inside systemd's credentials directory."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and not path.is_absolute() and (Path(creds) / path).exists():
        path = Path(creds) / path
    return SecretStr(path.read_text(encoding="utf-8").rstrip("\r\n"))


def list_from_text(value: Any) -> Any:
    """Let `--set nats.servers=a,b` (or a JSON list) set a list: CLI values arrive as text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


SubjectTemplate = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\s]+$")]
