from __future__ import annotations

import urllib.error

import pytest


@pytest.fixture
def no_network(monkeypatch):
    """Every download fails as it does offline; the addresses asked for are recorded."""
    asked: list[str] = []

    def offline(url, target):
        asked.append(url)
        msg = "no network in tests"
        raise urllib.error.URLError(msg)

    monkeypatch.setattr("trajvi.datasets._fetch.download", offline)
    monkeypatch.delenv("TRAJVI_DATA_DIR", raising=False)
    return asked


@pytest.fixture
def served(monkeypatch):
    """A fake download serving the files put in the returned dict (url -> path); any other address fails."""
    files: dict = {}

    def serve(url, target):
        if url not in files:
            msg = f"not served: {url}"
            raise urllib.error.URLError(msg)
        target.write_bytes(files[url].read_bytes())

    monkeypatch.setattr("trajvi.datasets._fetch.download", serve)
    monkeypatch.delenv("TRAJVI_DATA_DIR", raising=False)
    return files
