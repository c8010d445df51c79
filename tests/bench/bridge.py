"""The alternative a user would build: an MQTT-to-HTTP bridge in front of llama-cpp-python's
OpenAI-compatible server (`python -m llama_cpp.server`), in the pattern of the public MQTT-LLM
bridges: subscribe to questions, POST each to /v1/chat/completions, publish the reply.

Written for the benchmark only, and kept as small as such bridges are, with two favours to it:
- no retrieval of its own: it looks the question's prompt (system prompt, the excerpts our
  gateway retrieved for it, the question) up in a table the benchmark wrote, so it is compared
  on the same prompt without paying for embedding and search;
- a thread per question in flight (up to 32), so concurrent terminals queue at the server, not
  in the bridge. No journal, no dedupe, QoS 1 replies without waiting for the broker's PUBACK.

    python -m tests.bench.bridge --mqtt-port P --server http://127.0.0.1:8000 --prompts F.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

QUESTIONS = "bridge/+/terminal/+/question"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    prompts: dict[str, list[dict[str, str]]] = json.loads(args.prompts.read_text())
    server = urlsplit(args.server)
    pool = ThreadPoolExecutor(max_workers=32)

    def complete(messages: list[dict[str, str]]) -> str:
        # A connection per request, as `requests.post` does: a kept-alive one would be closed
        # by the server while its thread waits for the next question (uvicorn: 5 s idle).
        conn = http.client.HTTPConnection(server.hostname, server.port, timeout=600)
        try:
            body = json.dumps(
                {"messages": messages, "max_tokens": args.max_tokens, "temperature": 0.0}
            )
            headers = {"Content-Type": "application/json"}
            conn.request("POST", "/v1/chat/completions", body, headers)
            reply: dict[str, Any] = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        return str(reply["choices"][0]["message"]["content"])

    def handle(client: paho.Client, topic: str, payload: bytes) -> None:
        question = json.loads(payload)
        try:
            text = complete(prompts[question["text"]])
        except Exception as exc:  # said, not swallowed by the pool
            print(f"bridge: {question.get('id')}: {exc!r}", file=sys.stderr, flush=True)
            text = f"error: {exc!r}"
        answer_topic = topic.rsplit("/", 1)[0] + "/answer"
        client.publish(
            answer_topic, json.dumps({"question_id": question["id"], "text": text}), qos=1
        )

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        pool.submit(handle, client, msg.topic, bytes(msg.payload))

    def on_connect(client: paho.Client, *rest: Any) -> None:
        sock = client.socket()
        if isinstance(sock, socket.socket):  # as ours: the comparison is not about Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(QUESTIONS, qos=1)

    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bridge")
    client.on_message = on_message
    client.on_connect = on_connect
    client.connect("127.0.0.1", args.mqtt_port)
    client.loop_forever()


if __name__ == "__main__":
    main()
