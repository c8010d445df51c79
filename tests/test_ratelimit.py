"""The keyed token buckets behind the per-terminal question limit (`max_delay_s=0`: refuse)."""

from __future__ import annotations

from gateway.questions.ratelimit import RateLimiter


def refusing(per_minute: float, burst: int, max_keys: int = 100) -> RateLimiter:
    return RateLimiter(per_minute=per_minute, burst=burst, max_delay_s=0.0, max_keys=max_keys)


def test_burst_then_refused_until_a_token_refills() -> None:
    rl = refusing(per_minute=60, burst=3)
    assert [rl.reserve("t1", 0.0) for _ in range(4)] == [0.0, 0.0, 0.0, None]
    assert rl.reserve("t1", 0.5) is None  # half a token
    assert rl.reserve("t1", 1.0) == 0.0  # one second: one token at 60/min
    assert rl.reserve("t1", 1.0) is None


def test_refusals_do_not_spend_tokens() -> None:
    rl = refusing(per_minute=60, burst=1)
    assert rl.reserve("t1", 0.0) == 0.0
    for i in range(100):  # a flood of refused questions must not push the next token away
        assert rl.reserve("t1", i * 0.001) is None
    assert rl.reserve("t1", 1.0) == 0.0


def test_one_terminal_flooding_leaves_another_untouched() -> None:
    rl = refusing(per_minute=6, burst=2)
    refused = sum(rl.reserve("flooder", i / 100) is None for i in range(1000))
    assert refused == 998
    assert rl.reserve("quiet", 10.0) == 0.0
    assert rl.reserve("quiet", 10.0) == 0.0


def test_bounded_map_evicts_the_least_recent_terminal_with_a_full_bucket() -> None:
    rl = refusing(per_minute=1, burst=1, max_keys=2)
    assert rl.reserve("a", 0.0) == 0.0
    assert rl.reserve("b", 0.0) == 0.0
    assert rl.reserve("c", 0.0) == 0.0  # evicts "a"
    assert len(rl) == 2
    assert rl.reserve("a", 0.0) == 0.0  # forgotten: starts again with a full bucket
    assert rl.reserve("c", 0.0) is None


def test_clock_going_backwards_does_not_mint_tokens() -> None:
    rl = refusing(per_minute=60, burst=1)
    assert rl.reserve("t1", 100.0) == 0.0
    assert rl.reserve("t1", 50.0) is None
