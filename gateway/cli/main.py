"""The `edge-gateway` command line: one entry point for running, feeding and asking the gateway."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from gateway.cli import broker
from gateway.cli.exits import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from gateway.config import ConfigFileError, Settings, load_settings, merge_overrides
from gateway.errors import GatewayError
from gateway.logging import configure_logging, get_logger
from gateway.version import package_version

log = get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description="Offline AI gateway: answers plant questions over MQTT from local documents.",
    )
    parser.add_argument("--version", action="version", version=f"edge-gateway {package_version()}")
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one setting (repeatable), e.g. --set mqtt.port=1884",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway until SIGTERM/SIGINT")
    run.add_argument("--allow-test-ops", action="store_true", help=argparse.SUPPRESS)

    ingest = sub.add_parser("ingest", help="add or update documents in the knowledge base")
    ingest.add_argument("paths", nargs="+", type=Path)

    kb = sub.add_parser("kb", help="inspect and maintain the knowledge base")
    kb_sub = kb.add_subparsers(dest="kb_command", required=True)
    kb_sub.add_parser("list", help="list ingested documents")
    kb_sub.add_parser("stats", help="sizes and the embedding model of the knowledge base")
    remove = kb_sub.add_parser("remove", help="drop documents (by path) from the knowledge base")
    remove.add_argument("paths", nargs="*", type=Path)
    remove.add_argument("--missing", action="store_true", help="drop documents whose file is gone")
    calibrate = kb_sub.add_parser(
        "calibrate", help="measure similarity scores and recommend a fallback threshold"
    )
    calibrate.add_argument(
        "questions",
        type=Path,
        help="one in-domain question a line, or an eval question set (.jsonl: its off-topic "
        "questions are added to the built-in ones)",
    )
    export = kb_sub.add_parser(
        "export", help="back up the knowledge base to one checksummed file (safe while running)"
    )
    export.add_argument("file", type=Path)
    restore = kb_sub.add_parser(
        "import", help="restore a backup (refused if its embedding model differs from ours)"
    )
    restore.add_argument("file", type=Path)
    hit_test = kb_sub.add_parser(
        "search", help="what a question retrieves: chunks, scores and quotes, without the model"
    )
    hit_test.add_argument("question")
    hit_test.add_argument("--top-k", type=int, help="chunks to show (default: kb.top_k)")

    evaluate = sub.add_parser(
        "eval",
        help="the acceptance test: answer a question set (JSONL) and score it",
        description='Each line: {"id", "question", "expected_document" (null: must '
        'fall back), "key_facts": [acceptable variants]}. Runs in process against the '
        "configured knowledge base and model.",
    )
    evaluate.add_argument("questions", type=Path)
    evaluate.add_argument(
        "--mode",
        dest="modes",
        action="append",
        choices=["extractive", "generative", "checked"],
        help="answer mode(s) to run (repeatable; default: answer.mode)",
    )
    evaluate.add_argument("--out", type=Path, help="write results.jsonl and totals.json here")

    ask = sub.add_parser("ask", help="ask over MQTT exactly as a terminal would")
    ask.add_argument("question")
    ask.add_argument("--terminal", default="cli", help="terminal id to ask as (default: cli)")
    ask.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer")
    ask.add_argument("--json", action="store_true", help="print the raw reply JSON")
    ask.add_argument("--username", help="MQTT user name of the terminal")
    ask.add_argument("--password-file", type=Path, help="file holding the terminal's password")
    ask.add_argument(
        "--conversation",
        metavar="ID",
        help="ask as a turn of this conversation: earlier turns with the same ID give context",
    )

    chat = sub.add_parser(
        "chat", help="hold one conversation over MQTT: a question per line, follow-ups in context"
    )
    chat.add_argument("--terminal", default="cli", help="terminal id to ask as (default: cli)")
    chat.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per answer")
    chat.add_argument("--conversation", metavar="ID", help="continue this conversation")
    chat.add_argument("--username", help="MQTT user name of the terminal")
    chat.add_argument("--password-file", type=Path, help="file holding the terminal's password")

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("check", help="print the effective configuration or every error")

    sub.add_parser(
        "check-data",
        help="can this version open the journal and the knowledge base (schema versions)?",
    )
    schema = sub.add_parser("schema", help="write the JSON Schemas of all wire messages")
    schema.add_argument("--out", type=Path, default=Path("models/schemas"))
    broker.add_parser(sub)
    return parser


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, merge_overrides(args.overrides))


def _print_validation_error(exc: ValidationError) -> None:
    print(f"configuration is invalid ({exc.error_count()} errors):", file=sys.stderr)
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        print(f"  {where}: {error['msg']}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _load(args)
    except ValidationError as exc:
        _print_validation_error(exc)
        return EXIT_CONFIG
    except (ConfigFileError, ValueError, OSError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format)
    try:
        return _dispatch(args, settings)
    except GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command: str = args.command
    if command == "run":
        return _run(settings, allow_test_ops=args.allow_test_ops, reload=lambda: _load(args))
    if command in ("config", "schema", "broker"):
        return _dispatch_tools(args, settings)
    if command in ("ask", "chat"):
        return _dispatch_terminal(args, settings)
    if command == "check-data":
        from gateway.cli.data import check_data

        return check_data(settings)
    if command == "eval":
        from gateway.cli.evaluate import evaluate

        return evaluate(
            settings, args.questions, modes=args.modes or [settings.answer.mode], out=args.out
        )
    return _dispatch_kb(args, settings)


def _dispatch_terminal(args: argparse.Namespace, settings: Settings) -> int:
    """The commands that talk to a running gateway as a terminal does."""
    from gateway.cli.ask import ask_command, chat_command

    if args.command == "chat":
        return chat_command(
            settings,
            terminal=args.terminal,
            timeout_s=args.timeout,
            username=args.username,
            password_file=args.password_file,
            conversation=args.conversation,
        )
    return ask_command(
        settings,
        args.question,
        terminal=args.terminal,
        timeout_s=args.timeout,
        raw=args.json,
        username=args.username,
        password_file=args.password_file,
        conversation=args.conversation,
    )


def _dispatch_tools(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "config":
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
        return EXIT_OK
    if args.command == "schema":
        from models.schema import write_schemas

        for path in write_schemas(args.out):
            print(path)
        return EXIT_OK
    return broker.dispatch(args)


def _dispatch_kb(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.cli import kb as kb_commands

    if args.command == "ingest":
        return kb_commands.ingest(settings, args.paths)
    handlers = {
        "list": lambda: kb_commands.list_documents(settings),
        "stats": lambda: kb_commands.stats(settings),
        "remove": lambda: kb_commands.remove(settings, args.paths, missing=args.missing),
        "calibrate": lambda: kb_commands.calibrate(settings, args.questions),
        "export": lambda: kb_commands.export(settings, args.file),
        "import": lambda: kb_commands.import_(settings, args.file),
        "search": lambda: _hit_test(settings, args),
    }
    return handlers[args.kb_command]()


def _hit_test(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.cli.evaluate import search

    return search(settings, args.question, top_k=args.top_k)


def _run(settings: Settings, *, allow_test_ops: bool, reload: Callable[[], Settings]) -> int:
    from gateway.app import Gateway
    from gateway.ops.operations import install_signal_handlers

    async def serve() -> None:
        stop = asyncio.Event()
        gateway = Gateway(settings, allow_test_ops=allow_test_ops)
        install_signal_handlers(gateway, stop, reload)  # TERM/INT stop, HUP reload
        await gateway.run(stop)

    asyncio.run(serve())
    return EXIT_OK
