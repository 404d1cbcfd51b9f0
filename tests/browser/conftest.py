"""Fixtures for the browser tests: one headless Chromium per session, a fresh page per test."""

from collections.abc import AsyncIterator, Iterator

import pytest

from .chromium import Chromium, Page


@pytest.fixture(scope="session")
def browser() -> Iterator[Chromium]:
    """Headless Chromium, started when the first test asks for it and stopped at the end."""
    chromium = Chromium()
    chromium.start()
    try:
        yield chromium
    finally:
        chromium.stop()


@pytest.fixture
async def page(browser: Chromium) -> AsyncIterator[Page]:
    """A blank tab in a browser context of its own; the test fails if the page threw an
    error that nothing caught (a test that expects one takes it with ``take_errors()``)."""
    opened = await Page.open(browser)
    try:
        yield opened
        await opened.settle()
        opened.check_errors()
    finally:
        await opened.close()
