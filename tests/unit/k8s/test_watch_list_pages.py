"""watch.list_all asks for the next page while it decodes the current one, and the token
decoded from the whole page still decides what is asked."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from agent.k8s import watch


class Page:
    def __init__(self, data: bytes) -> None:
        self.data = data


def page_bytes(names: list[str], token: str | None, rv: str = "7") -> bytes:
    meta: dict[str, Any] = {"resourceVersion": rv}
    if token:
        meta["continue"] = token
    items = [{"metadata": {"name": n}} for n in names]
    return json.dumps({"kind": "PodList", "metadata": meta, "items": items}).encode()


def paged(names: list[str], size: int, calls: list[str | None]) -> Any:
    def list_fn(**kwargs: Any) -> Page:
        token = kwargs.get("_continue")
        calls.append(token)
        start = int(token[1:]) if token else 0
        more = f"t{start + size}" if start + size < len(names) else None
        return Page(page_bytes(names[start : start + size], more))

    return list_fn


def test_the_next_page_is_asked_for_before_this_one_is_decoded() -> None:
    names = [f"p{i}" for i in range(6)]
    calls: list[str | None] = []
    inner = paged(names, 2, calls)
    asked: dict[str, threading.Event] = {"t2": threading.Event(), "t4": threading.Event()}

    def list_fn(**kwargs: Any) -> Page:
        page = inner(**kwargs)
        if kwargs.get("_continue") in asked:
            asked[kwargs["_continue"]].set()
        return page

    def slim(obj: dict[str, Any]) -> dict[str, Any]:
        # the first item of pages 1 and 2 is trimmed only once the next page was asked for:
        # without the read-ahead this waits in vain
        name = obj["metadata"]["name"]
        if name in ("p0", "p2"):
            assert asked["t2" if name == "p0" else "t4"].wait(5), "next page not asked for"
        return obj

    relist = watch.list_all("pods", list_fn, 2, slim)
    assert [i["metadata"]["name"] for i in relist.items] == names
    assert calls == [None, "t2", "t4"] and relist.resource_version == "7"


@pytest.mark.parametrize(
    ("raw", "token"),
    [
        (page_bytes(["a"], "abc"), "abc"),
        (page_bytes(["a"], 'we"ird\\to/ken\u00e9'), 'we"ird\\to/ken\u00e9'),
        (page_bytes(["a"], None), None),
        # metadata after the items: not read ahead
        (b'{"items":[{"metadata":{"continue":"x"}}],"metadata":{"continue":"y"}}', None),
        (b'{"metadata":{"continue":""},"items":[]}', None),
    ],
)
def test_peek_continue_reads_the_metadata_before_the_items(raw: bytes, token: str | None) -> None:
    assert watch.peek_continue(raw) == token


def test_a_read_ahead_on_another_token_is_dropped_and_the_page_asked_again() -> None:
    calls: list[str | None] = []
    first = b'{"metadata":{"x":{"continue":"decoy"},"continue":"real"},"items":[{"n":1}]}'

    def list_fn(**kwargs: Any) -> Page:
        token = kwargs.get("_continue")
        calls.append(token)
        if token is None:
            return Page(first)
        if token == "decoy":
            return Page(page_bytes(["wrong"], None))
        return Page(page_bytes(["right"], None, rv="9"))

    relist = watch.list_all("pods", list_fn, 1)
    assert relist.items == [{"n": 1}, {"metadata": {"name": "right"}}]
    assert relist.resource_version == "9"
    assert sorted(calls, key=str) == sorted([None, "decoy", "real"], key=str)


def test_an_error_of_the_read_ahead_is_the_list_s_error() -> None:
    def list_fn(**kwargs: Any) -> Page:
        if kwargs.get("_continue"):
            raise ConnectionResetError("server went away")
        return Page(page_bytes(["a"], "t1"))

    with pytest.raises(ConnectionResetError):
        watch.list_all("pods", list_fn, 1)
