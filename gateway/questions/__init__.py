"""The question path: from an inbound message to a delivered, journaled reply.

This room owns intake (intake.py: decoding and ids; screening.py: accept or refuse), the
journal (journal.py), the per-terminal rate limit (ratelimit.py), the service that queues and
answers (service.py), answering itself (answering.py, prompt.py, answer_cache.py), partial
answers (streaming.py), the outbox (outbox.py: store, publish, mark sent, settle) and the
counters of this path (metrics.py). It may import models, the foundation, grounding, rag and
worker; diagnosis, ops and the app import it.
"""
