"""Every list API pages with tokens on the real services: each item exactly once across the
pages, and a token from another query, a forged one or an oversized page is refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
import pytest
from lapse_common.pb.lapse.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    request_service_pb2,
    revoker_service_pb2,
    revoker_service_pb2_grpc,
)

from tests.integration.clients import StackClients, bearer, run_cli
from tests.integration.revocation_support import submit
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]

Item = TypeVar("Item")


async def every_page(
    fetch: Callable[[str], Awaitable[tuple[Sequence[Item], str]]],
) -> list[list[Item]]:
    pages: list[list[Item]] = []
    token = ""
    while True:
        items, token = await fetch(token)
        pages.append(list(items))
        assert len(pages) < 1000, "the pages never end"
        if not token:
            return pages


def with_cursor(token: str, cursor: list[str]) -> str:
    """`token` with its cursor replaced, digest and version kept."""
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    body["after"] = cursor
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


async def test_lists_page_with_tokens_and_refuse_tokens_that_are_not_theirs(
    stack: LapseStack,
) -> None:
    clients = StackClients(stack)
    mine = bearer(stack.token("pg01"))
    approval_channel = stack.aio_channel("approval")
    revoker_channel = stack.aio_channel("revoker")
    approvals = approval_service_pb2_grpc.ApprovalServiceStub(approval_channel)
    revoker = revoker_service_pb2_grpc.RevokerServiceStub(revoker_channel)
    # Gated requests stay pending: five rows in pg01's activity and approver-b's inbox.
    submitted = [
        await submit(clients, stack, user="pg01", resource="g-any", seconds=60) for _ in range(5)
    ]
    try:

        async def activity(token: str) -> tuple[Sequence[str], str]:
            page = await clients.requests.ListActivity(
                request_service_pb2.ListActivityRequest(page_size=2, page_token=token),
                metadata=mine,
            )
            return [r.request_id for r in page.requests], page.next_page_token

        pages = await every_page(activity)
        # Every page but the last is full, and nothing is served twice; the five newest are
        # ours (earlier tests on this stack may have left pg01 older requests).
        assert all(len(page) == 2 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 2
        served = [request_id for page in pages for request_id in page]
        assert len(served) == len(set(served))
        assert set(served[:5]) == set(submitted), served

        approver = bearer(stack.token("approver-b"))

        async def inbox(token: str) -> tuple[Sequence[str], str]:
            page = await approvals.ListPendingApprovals(
                approval_service_pb2.ListPendingApprovalsRequest(page_size=2, page_token=token),
                metadata=approver,
            )
            return [p.request_id for p in page.approvals], page.next_page_token

        async def whole_inbox() -> list[str]:
            return [request_id for page in await every_page(inbox) for request_id in page]

        # The approval service learns of a request from Kafka, a moment after it is filed.
        waiting = await wait_for(
            whole_inbox,
            lambda ids: set(submitted) <= set(ids),
            what="the five requests in approver-b's inbox",
        )
        assert len(waiting) == len(set(waiting))

        first = await clients.requests.ListActivity(
            request_service_pb2.ListActivityRequest(page_size=2), metadata=mine
        )
        refusals = {
            "another caller's token": (
                request_service_pb2.ListActivityRequest(
                    page_size=2, page_token=first.next_page_token
                ),
                bearer(stack.token("pg02")),
                "page_token belongs to another query",
            ),
            "a forged token": (
                request_service_pb2.ListActivityRequest(page_token="eyJ2IjogOX0"),
                mine,
                "page_token is not one this list gave out",
            ),
            # The query's digest is an unkeyed hash a caller can compute, so a token can carry
            # the right digest and a cursor that is not one.
            "a genuine token with a forged cursor": (
                request_service_pb2.ListActivityRequest(
                    page_size=2, page_token=with_cursor(first.next_page_token, ["not a time", ""])
                ),
                mine,
                "page_token is not one this list gave out",
            ),
            "an oversized page": (
                request_service_pb2.ListActivityRequest(page_size=5000),
                mine,
                "page_size is 5000; it must be between 0 and 1000",
            ),
        }
        for what, (asked, caller, message) in refusals.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await clients.requests.ListActivity(asked, metadata=caller)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
            assert message in (refused.value.details() or ""), what

        admin = bearer(stack.token("admin-1", roles=("admin",)))
        whole_flows = await approvals.ListFlows(
            approval_service_pb2.ListFlowsRequest(), metadata=admin
        )

        async def flows(token: str) -> tuple[Sequence[str], str]:
            page = await approvals.ListFlows(
                approval_service_pb2.ListFlowsRequest(page_size=3, page_token=token),
                metadata=admin,
            )
            return [f"{f.name}/{f.integration_id}" for f in page.flows], page.next_page_token

        assert [f for page in await every_page(flows) for f in page] == [
            f"{f.name}/{f.integration_id}" for f in whole_flows.flows
        ]
        whole_agents = await revoker.ListAgents(
            revoker_service_pb2.ListAgentsRequest(), metadata=admin
        )

        async def agents(token: str) -> tuple[Sequence[str], str]:
            page = await revoker.ListAgents(
                revoker_service_pb2.ListAgentsRequest(page_size=1, page_token=token),
                metadata=admin,
            )
            return [a.agent_id for a in page.agents], page.next_page_token

        agent_pages = await every_page(agents)
        assert [a for page in agent_pages for a in page] == [
            a.agent_id for a in whole_agents.agents
        ]
        assert len(agent_pages) == len(whole_agents.agents) >= 2

        # The CLI follows the tokens up to --limit and says how to go on.
        shown = run_cli(stack, "activity", "--limit", "2", token=stack.token("pg01"))
        assert shown.returncode == 0, shown.stderr
        assert sum(request_id in shown.stdout for request_id in submitted) == 2
        assert "(more: run again with --page-token " in shown.stderr
        token = shown.stderr.split("--page-token ", 1)[1].split(")")[0]
        rest = run_cli(
            stack, "activity", "--limit", "10", "--page-token", token, token=stack.token("pg01")
        )
        assert rest.returncode == 0, rest.stderr
        assert sum(request_id in rest.stdout for request_id in submitted) == 3
        assert "more:" not in rest.stderr
    finally:
        for request_id in submitted:
            await clients.requests.CancelRequest(
                request_service_pb2.CancelRequestRequest(request_id=request_id, reason="paging"),
                metadata=mine,
            )
        await approval_channel.close()
        await revoker_channel.close()
        await clients.close()
