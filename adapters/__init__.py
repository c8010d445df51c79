"""Bus adapters: one class per transport (mqtt.py: paho-mqtt, MQTT 5 and 3.1.1; nats.py and
jetstream.py: nats-py, core NATS and JetStream).

This room owns everything that speaks a broker's protocol: sessions, acknowledgements, reply
addressing, Last Will, reconnects. Each adapter implements `gateway.bus.BusAdapter` and turns its
library's messages into one `InboundMessage` envelope. It may import models and the core rooms
of gateway/ (configuration, logging, the bus seam); only gateway.app imports it, so the core
never sees paho or nats.
"""
