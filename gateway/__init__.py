"""The gateway daemon: one process that answers plant questions from the plant's own documents.

This package owns the daemon's core, arranged in rooms by concern. Imports go one way, lowest
first (tests/test_architecture.py checks it on every `make test`):

    models                     wire contracts (pydantic, exported as JSON Schema)
    gateway.logging, errors, storage_schema, executor, config, bundled, llama_backends,
    version, bus               foundation: logs, typed errors, schema versions of the SQLite
                               files, the I/O thread, configuration, the bundled models, loading
                               llama.cpp's CPU backend, the installed release, the transport
                               seam every adapter implements
    gateway.grounding          the manual's own lines: sentences, quotes, checks, loop guard
    gateway.rag                knowledge base: loaders, chunking, store, search, embeddings
    gateway.worker             the confined llama.cpp worker, its supervisor and the scheduler
    gateway.questions          the question path: intake, journal, answering, outbox
    gateway.diagnosis          device alarms to diagnoses for SCADA
    gateway.evaluation         `edge-gateway eval`: question sets, scoring, the acceptance test
    gateway.ops                health, metrics, Prometheus, systemd notify, reload, signals
    adapters                   MQTT and NATS, one class per transport
    gateway.app                the one composition root
    gateway.cli                `edge-gateway`, one module per command group

A room may import its own modules and the rooms above it in this list, never one below it.
"""
