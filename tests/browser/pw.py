"""Playwright's `expect` for the browser tests, importable also where Playwright is missing:
then the `browser` fixture (which every browser test uses) skips the test, or fails it with
CI=true, before `expect` is needed."""

try:
    from playwright.sync_api import expect
except ImportError:
    expect = None

__all__ = ["expect"]
