"""The plant's acceptance test: a question set run against the configured knowledge base and
model, scored the way a technician would judge the answers.

This room owns the question-set format (cases.py), scoring one answer and the totals
(scoring.py), the printed and written report (report.py) and the in-process runner
(runner.py). It may import models, the foundation, grounding, rag, worker and questions; the
command line (`edge-gateway eval`, `kb calibrate`) and the bench import it.
"""
