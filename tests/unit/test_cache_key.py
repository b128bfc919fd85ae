"""The response cache's request normal form (gateway.serve.cache_key) and its pure rules
(gateway.serve.cache): what makes two requests the same answer, what is cacheable, who opts
out, and the nearest semantic entry."""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway.serve.cache import _closest, cacheable, opted_out
from gateway.serve.cache_key import normalise, request_keys
from predictors.embedding import pack_vector


def body(text: str = "hello", **kw: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **kw}


def key(b: dict[str, Any], tenant: str = "t1", target: str = "policy:default") -> str:
    return request_keys(tenant, target, b).exact


def test_fields_that_cannot_change_the_answer_are_left_out() -> None:
    plain = key(body())
    assert key(body(stream=True, stream_options={"include_usage": True})) == plain
    assert key(body(user="u-42", metadata={"task_id": "x"}, store=False)) == plain
    assert key({**body(), "model": "other-alias"}) == plain  # the resolved target counts
    assert key(body(temperature=None, n=1)) == plain  # None dropped, n=1 is the default


def test_fields_that_change_the_answer_make_another_key() -> None:
    plain = key(body())
    others = [
        body("hello!"),
        body(temperature=0.7),
        body(top_p=0.5),
        body(max_tokens=10),
        body(n=2),
        body(stop=["x"]),
        body(seed=1),
        body(tools=[{"type": "function", "function": {"name": "f"}}]),
        body(tool_choice="none"),
        body(response_format={"type": "json_object"}),
        {
            "model": "auto",
            "messages": [{"role": "system", "content": "be short"}, *body()["messages"]],
        },
    ]
    keys = {key(b) for b in others}
    assert plain not in keys and len(keys) == len(others)


def test_tenant_and_resolved_model_are_part_of_the_key() -> None:
    b = body()
    assert key(b, tenant="t1") != key(b, tenant="t2")
    assert key(b, target="policy:default") != key(b, target="backend:cheap=openai/x")
    assert request_keys("t1", "p", b).scope != request_keys("t2", "p", b).scope


def test_equivalent_spellings_normalise_alike() -> None:
    assert key(body(stop="END")) == key(body(stop=["END"]))
    assert key(body(max_completion_tokens=5)) == key(body(max_tokens=5))
    parts = [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]
    assert key(body(parts)) == key(body("hello"))
    assert key(body(temperature=0.2, top_p=1)) == key({**body(top_p=1), "temperature": 0.2})
    image = [{"type": "image_url", "image_url": {"url": "data:x"}}]
    assert normalise(body(image))["messages"][0]["content"] == image  # not text-only: kept


def test_scope_is_the_request_without_its_last_user_message() -> None:
    a, b = request_keys("t", "p", body("first")), request_keys("t", "p", body("second"))
    assert a.exact != b.exact and a.scope == b.scope
    c = request_keys("t", "p", body("first", temperature=1.0))
    assert c.scope != a.scope


def test_only_complete_answers_are_cacheable() -> None:
    def answer(finish: str = "stop", **message: Any) -> dict[str, Any]:
        msg = {"role": "assistant", "content": "hi", **message}
        return {"choices": [{"index": 0, "message": msg, "finish_reason": finish}]}

    assert cacheable(answer())
    assert not cacheable(answer("length"))
    assert not cacheable(answer("tool_calls", tool_calls=[{"id": "1"}]))
    assert not cacheable(answer(tool_calls=[{"id": "1"}]))
    assert not cacheable({"choices": []})
    assert not cacheable({"error": {"message": "x"}, "choices": answer()["choices"]})


def test_opt_out_by_header_cache_control_or_metadata() -> None:
    assert not opted_out({}, body())
    assert opted_out({"x-tollgate-cache": "off"}, body())
    assert opted_out({"cache-control": "no-cache"}, body())
    assert opted_out({"cache-control": "max-age=0, no-store"}, body())
    assert opted_out({}, body(metadata={"tollgate_cache": "off"}))
    assert not opted_out({"x-tollgate-cache": "on"}, body(metadata={"task_id": "x"}))


def test_closest_entry_by_cosine() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=384).astype(np.float32)
    q /= np.linalg.norm(q)
    near = q + 0.01 * rng.normal(size=384).astype(np.float32)  # cosine about 0.98
    far = rng.normal(size=384).astype(np.float32)
    vectors = {
        "near": pack_vector(near / np.linalg.norm(near)),
        "far": pack_vector(far / np.linalg.norm(far)),
        "broken": "not base64!",
    }
    found = _closest(q, vectors)
    assert found is not None and found[0] == "near"
    assert 0.9 < found[1] < 1.0
    assert _closest(q, {}) is None
