"""Operations: what the person on call and the plant's IT see of a running gateway.

This room owns the health message (health.py), the Prometheus endpoint (prometheus.py),
systemd notify and watchdog (sdnotify.py, operations.py), the signals and SIGHUP reload
(operations.py, reload.py). It sees the gateway only through the GatewayView Protocol
(view.py), so it may import every core room for types but never gateway.app, which imports it.
"""
