"""The chunk fallback as a pure decision: no servers."""

from __future__ import annotations

import pytest

from shared.http.errors import ApiError, AuthError, BadRequestError, CredentialError, ServerError, ThrottledError, TransportError
from shared.sync.fallback import Step, bulk_refused_by_table, next_step


def error(kind: type[ApiError]) -> ApiError:
    return kind("refused", status=400)


@pytest.mark.parametrize("kind", [BadRequestError, ServerError, ApiError])
def test_a_refused_bulk_request_falls_back_to_a_batch(kind: type[ApiError]) -> None:
    assert next_step(Step.BULK, error(kind)) is Step.BATCH


@pytest.mark.parametrize("kind", [BadRequestError, ServerError, ApiError])
def test_a_refused_batch_falls_back_to_one_request_per_record(kind: type[ApiError]) -> None:
    assert next_step(Step.BATCH, error(kind)) is Step.SINGLE


def test_one_request_per_record_is_the_last_step() -> None:
    assert next_step(Step.SINGLE, error(ServerError)) is None


@pytest.mark.parametrize("step", list(Step))
@pytest.mark.parametrize("kind", [ThrottledError, TransportError])
def test_throttling_or_transport_failures_never_fall_back_to_more_requests(step: Step, kind: type[ApiError]) -> None:
    assert next_step(step, error(kind)) is None


@pytest.mark.parametrize("kind", [AuthError, CredentialError])
def test_an_authentication_failure_aborts_instead_of_falling_back(kind: type[ApiError]) -> None:
    with pytest.raises(kind):
        next_step(Step.BULK, error(kind))


def test_a_bulk_refusal_whose_records_all_succeed_is_the_tables_refusal() -> None:
    assert bulk_refused_by_table(Step.BULK, [None, None])
    assert not bulk_refused_by_table(Step.BULK, [None, error(BadRequestError)])
    assert not bulk_refused_by_table(Step.BATCH, [None, None])
    assert not bulk_refused_by_table(None, [None])
