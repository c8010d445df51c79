"""The model worker: llama.cpp in a process of its own, confined, supervised, scheduled.

This room owns both sides of the worker: the program that runs in the child (server.py,
serving.py, engine.py), the framed protocol between them (protocol.py), and in the gateway the
launch plan (launch.py), confinement (confinement.py, cgroupfs.py), the process handle
(process.py), the supervisor with its restart budget and death classification (supervisor.py,
restarts.py), the request API (client.py, replies.py) and the scheduler that decides who uses
the one worker next (scheduler.py). It may import models, the foundation and rag (the embedder).
"""
