"""Device alarms to structured diagnoses for SCADA (issue 4).

coalescer.py, cache.py and board.py (with gateway/ratelimit.py) are plain bounded data structures;
pipeline.py turns one alarm into a Diagnosis (retrieve -> threshold -> grammar-constrained
generation -> validation); service.py wires them to the bus, the scheduler and the worker.
"""
