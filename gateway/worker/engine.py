"""The models inside the worker: one llama.cpp chat model and one embedding model.

Runs only in the worker process (it imports llama_cpp). Nothing here is thread-safe, and nothing
needs to be: the worker serves one request at a time.

Generation is done here rather than through `create_chat_completion` for three reasons:
- the prompt is templated and tokenized exactly once, by the same code `count_tokens` uses, so
  the gateway's context budget and the real prompt can never disagree;
- the token ids are ours: `Llama.generate` keeps the evaluated tokens and reuses the longest
  common prefix of the KV cache on the next call (a fixed system prompt is evaluated once), and
  a later prompt cache (`save_state`/`load_state`) plugs in at the same place;
- the exact number of completion tokens is known (the streaming chat API does not report it).
The chat template is the GGUF's own `tokenizer.chat_template`, rendered by llama-cpp-python's
`Jinja2ChatFormatter`, exactly as `create_chat_completion` would do for a template it cannot
map to a built-in format (it may otherwise silently substitute a similar built-in format).
"""

from __future__ import annotations

import codecs
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar

from gateway.grounding.loops import RepetitionGuard
from gateway.llama_backends import ensure_cpu_backend
from gateway.rag.embedder import LlamaEmbedder
from gateway.worker.protocol import ChatMessage

# Sampling defaults of llama-cpp-python's completion API; only temperature is exposed.
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05
GRAMMAR_CACHE_SIZE = 16


class ContextOverflowError(Exception):
    def __init__(self, prompt_tokens: int, max_tokens: int, limit: int) -> None:
        super().__init__(
            f"prompt of {prompt_tokens} tokens + max_tokens {max_tokens} exceeds the context "
            f"window of {limit} tokens"
        )
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class ModelFormatError(Exception):
    """The model cannot be used as a chat model (e.g. no chat template)."""


class SchemaGrammarError(ValueError):
    """A JSON Schema that llama.cpp's converter cannot turn into a grammar."""


class GrammarCache:
    """JSON Schema text -> LlamaGrammar, least recently used first out.

    Converting a schema to GBNF is pure Python and the same few schemas come back on every
    request, so each is converted once per worker. (llama-cpp-python 0.3.x keeps the GBNF text in
    the LlamaGrammar; llama.cpp parses it into its sampler at the start of each generation.)
    """

    def __init__(self, capacity: int = GRAMMAR_CACHE_SIZE) -> None:
        self._capacity = capacity
        self._grammars: OrderedDict[str, LlamaGrammar] = OrderedDict()
        self.compiled = 0

    def get(self, schema: str) -> LlamaGrammar:
        key = hashlib.sha256(schema.encode("utf-8", "surrogatepass")).hexdigest()
        grammar = self._grammars.get(key)
        if grammar is not None:
            self._grammars.move_to_end(key)
            return grammar
        try:
            grammar = LlamaGrammar.from_json_schema(schema, verbose=False)
        except Exception as exc:  # the converter raises bare ValueError/AssertionError/KeyError
            raise SchemaGrammarError(f"cannot compile the JSON schema: {exc!r}") from exc
        self.compiled += 1
        self._grammars[key] = grammar
        if len(self._grammars) > self._capacity:
            self._grammars.popitem(last=False)
        return grammar


@dataclass(frozen=True, slots=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    prompt_ms: float
    generate_ms: float
    prompt_eval_tokens: int | None
    finish_reason: str


def resolve_threads(n_threads: int) -> int:
    """0 means every core this process may run on (affinity, not the machine's core count)."""
    if n_threads > 0:
        return n_threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


PREFILL_CHUNK = 128
"""Prompt tokens evaluated between two looks at a preemption request (~0.5 s on 2 cores)."""

_KV_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}
"""KV cache element types (worker.kv_cache_type); a quantized V cache needs flash attention."""


class Engine:
    def __init__(
        self,
        model_path: Path,
        embedding_path: Path,
        *,
        n_ctx: int,
        n_threads: int,
        flash_attn: bool,
        prefix_reuse: bool = True,
        kv_cache_type: str = "f16",
    ) -> None:
        threads = resolve_threads(n_threads)
        self.prefix_reuse = prefix_reuse
        self.model_name = model_path.name.removesuffix(".gguf")
        ensure_cpu_backend()
        self._llm: Any = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=flash_attn,
            type_k=_KV_TYPES[kv_cache_type],
            type_v=_KV_TYPES[kv_cache_type],
            verbose=False,
        )
        self.n_ctx = int(self._llm.n_ctx())
        self._formatter = self._chat_formatter()
        self._vocab = self._llm._model.vocab
        self._embedder = LlamaEmbedder(embedding_path, n_threads=threads)
        self.embedding_dim = self._embedder.dim
        self.grammars = GrammarCache()

    def _chat_formatter(self) -> Jinja2ChatFormatter:
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelFormatError(f"{self.model_name} has no tokenizer.chat_template")
        eos_id = int(self._llm.token_eos())
        bos_id = int(self._llm.token_bos())
        model = self._llm._model
        return Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The templated prompt's token ids, exactly as `generate` feeds them to the model."""
        chat: list[Any] = [m.model_dump() for m in messages]
        rendered = self._formatter(messages=chat)
        tokens: list[int] = self._llm.tokenize(
            rendered.prompt.encode("utf-8", errors="replace"),
            add_bos=not rendered.added_special,
            special=True,
        )
        return tokens

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
        on_token: Callable[[str], None] | None = None,
        json_schema: str | None = None,
        repeat_penalty: float = 1.0,
        stop_on_loop: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Generate a reply; `on_token` gets each piece of text as soon as it is final.

        Never truncates: a prompt that leaves no room for `max_tokens` is refused.
        Text that might be the start of a stop string is held back until it is known not to be.
        With `json_schema`, llama.cpp's grammar sampler only lets through tokens that keep the
        output a prefix of a document valid for the schema; once it is complete, only
        end-of-generation remains possible. A `length` finish can still cut it short.
        With `stop_on_loop`, generation ends as soon as the text starts repeating itself
        (finish `loop`), and the returned text ends before the first repeat: a small model
        otherwise loops until max_tokens, which costs seconds and is never published anyway.
        """
        grammar = self.grammars.get(json_schema) if json_schema is not None else None
        tokens = self.prompt_tokens(messages)
        n_prompt = len(tokens)
        if n_prompt + max_tokens > self.n_ctx:
            raise ContextOverflowError(n_prompt, max_tokens, self.n_ctx)
        stops = [s for s in stop if s]
        emit = on_token or _ignore
        pieces: list[str] = []
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        completion = 0
        guard = RepetitionGuard() if stop_on_loop else None
        started = self._begin()
        first: float | None = None
        preempted = should_stop is not None and not self._prefill(tokens, should_stop)
        finish = "preempted" if preempted else "length"  # preempted: while the prompt was read
        stream: Iterable[int] = (
            ()
            if preempted
            else self._llm.generate(
                tokens,
                top_k=_TOP_K,
                top_p=_TOP_P,
                min_p=_MIN_P,
                temp=temperature,
                repeat_penalty=repeat_penalty,
                grammar=grammar,
            )
        )
        for token in stream:
            first = first or time.perf_counter()
            if should_stop is not None and should_stop():
                finish = "preempted"  # the KV cache keeps the prompt: resuming reuses it
                break
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                finish = "stop"
                break
            completion += 1
            pending += decoder.decode(self._llm.detokenize([token]))
            cut = _first_stop(pending, stops)
            if cut is not None:
                pending = pending[:cut]
                finish = "stop"
                break
            keep = _stop_prefix_len(pending, stops)
            ready, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
            if ready:
                pieces.append(ready)
                emit(ready)
                if guard is not None and guard.feed(ready):
                    finish = "loop"
                    pending = ""
                    break
            if completion >= max_tokens:
                break
        pending += decoder.decode(b"", final=True)
        if pending:
            pieces.append(pending)
            emit(pending)
        ended = time.perf_counter()
        first = first or ended
        return GenerationResult(
            text=guard.text if guard is not None and finish == "loop" else "".join(pieces),
            prompt_tokens=n_prompt,
            completion_tokens=completion,
            prompt_ms=(first - started) * 1000.0,
            generate_ms=(ended - first) * 1000.0,
            prompt_eval_tokens=int(llama_cpp.llama_perf_context(self._llm.ctx).n_p_eval) or None,
            finish_reason=finish,
        )

    def _begin(self) -> float:
        if not self.prefix_reuse:
            # Forget the evaluated tokens: llama.cpp then drops the whole KV cache and
            # evaluates the prompt from its first token (the baseline of `make bench`).
            self._llm.reset()
        llama_cpp.llama_perf_context_reset(self._llm.ctx)
        return time.perf_counter()

    def _prefill(self, tokens: Sequence[int], should_stop: Callable[[], bool]) -> bool:
        """Evaluate all but the last prompt token in chunks of PREFILL_CHUNK, asking between
        chunks whether to stop: a diagnosis prompt takes seconds to evaluate on a small box,
        and a question must not wait for all of it. `generate` then finds the prefix in the
        KV cache and evaluates only the last token. False when stopped."""
        held = list(self._llm.input_ids[: self._llm.n_tokens])
        common = 0
        for held_token, token in zip(held, tokens, strict=False):
            if held_token != token:
                break
            common += 1
        end = len(tokens) - 1
        self._llm.n_tokens = min(common, end)
        stopped = False
        for start in range(self._llm.n_tokens, end, PREFILL_CHUNK):
            if stopped := should_stop():
                break
            self._llm.eval(tokens[start : min(start + PREFILL_CHUNK, end)])
        # llama.cpp counts evaluated tokens when it next synchronizes: count them now, for
        # this request (`prompt_eval_tokens`), not for the next one.
        llama_cpp.llama_synchronize(self._llm.ctx)
        return not (stopped or should_stop())

    def embed(self, texts: Sequence[str]) -> tuple[int, bytes]:
        """(dim, little-endian float32 rows) of the L2-normalised embeddings of `texts`."""
        vectors = self._embedder.embed(list(texts))
        matrix = np.asarray(vectors, dtype="<f4").reshape(len(vectors), self.embedding_dim)
        return self.embedding_dim, matrix.tobytes()

    def close(self) -> None:
        self._embedder.close()
        self._llm.close()


def _ignore(_text: str) -> None:
    return None


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _stop_prefix_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is the beginning of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best
