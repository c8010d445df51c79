"""Device alarms to structured diagnoses for SCADA.

This room owns the diagnosis path: coalescer.py, cache.py and board.py are plain bounded data
structures; pipeline.py turns one alarm into a Diagnosis (retrieve -> threshold ->
grammar-constrained generation -> validation); service.py wires them to the bus, the scheduler
and the worker. It may import models, the foundation, rag, worker and questions (the search
hits, the scheduler, the rate limiter); nothing below it but ops and the app import it.
"""
