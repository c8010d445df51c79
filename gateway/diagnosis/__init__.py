"""Device alarms to structured diagnoses for SCADA (issue 4).

coalescer.py, ratelimit.py, cache.py and board.py are plain bounded data structures;
pipeline.py turns one alarm into a Diagnosis (retrieve -> threshold -> grammar-constrained
generation -> validation); service.py wires them to the bus, the scheduler and the worker.
"""
