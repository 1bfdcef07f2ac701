"""Security fixtures: client addresses of their own for each test, with their failed-key counts
cleared before and after, so no test is refused for another's failures."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from django.test import override_settings

from accounts import throttle

_numbers = itertools.count(1)


@pytest.fixture(autouse=True)
def _forget_shared_addresses() -> Iterator[None]:
    """Wrong keys sent without an address of their own (test clients default to 127.0.0.1, the
    WebSocket test client sends none) must not add up to a refusal in later tests."""
    yield
    for address in ("127.0.0.1", None):
        throttle.reset(address)


@pytest.fixture(autouse=True)
def _patient_verdicts() -> Iterator[None]:
    """Wait longer than the production default for the matching worker's verdicts, so a busy
    test machine does not turn them into 504s. Not through the ``settings`` fixture: a test that
    asks for it must have its changes undone in its own fixture order (the address clean-ups
    need the real Redis back)."""
    with override_settings(EXCHANGE_VERDICT_TIMEOUT_S=10):
        yield


@pytest.fixture
def new_address() -> Iterator[Callable[[], str]]:
    """Hands out documentation addresses (TEST-NET-3) not used by any other test."""
    used: list[str] = []

    def make() -> str:
        number = next(_numbers)
        address = f"203.0.113.{number}" if number < 255 else f"2001:db8::{number:x}"
        throttle.reset(address)
        used.append(address)
        return address

    yield make
    for address in used:
        throttle.reset(address)
