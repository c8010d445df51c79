"""What operations read and change of a running gateway, as a Protocol.

The composition root (gateway/app.py) builds the gateway and hands itself to this room; typing
that hand-over with the Gateway class itself would make ops import app, and app imports ops.
`Gateway` satisfies this Protocol structurally: nothing here inherits from anything.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.bus import BusAdapter
from gateway.config import Settings
from gateway.ops.health import LoopLagMonitor
from gateway.questions.answering import Answerer
from gateway.questions.journal import Journal
from gateway.questions.metrics import Metrics
from gateway.questions.service import QuestionService
from gateway.rag.live import LiveKnowledgeBase
from gateway.worker.supervisor import WorkerSupervisor
from models.health import GatewayState


class GatewayView(Protocol):
    """The running gateway's parts; `settings` and the reloadable policies are replaced by
    a SIGHUP reload, everything else is read."""

    settings: Settings
    allow_test_ops: bool
    ready: asyncio.Event
    metrics: Metrics
    loop_lag: LoopLagMonitor
    adapters: dict[str, BusAdapter]
    service: QuestionService | None
    worker: WorkerSupervisor | None
    journal: Journal | None
    kb: LiveKnowledgeBase | None
    answerer: Answerer | None

    def state(self) -> GatewayState: ...
