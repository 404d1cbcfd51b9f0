"""Browser tests: pages in a headless Chromium, driven over the DevTools protocol."""
