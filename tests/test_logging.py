import logging
import subprocess
import sys

import pytest

from trajvi._logging import logger


@pytest.fixture
def scvi_level():
    scvi_logger = logging.getLogger("scvi")
    saved = (scvi_logger.level, logger.level)
    logger.setLevel(logging.NOTSET)
    yield scvi_logger
    scvi_logger.setLevel(saved[0])
    logger.setLevel(saved[1])


def test_the_logger_propagates_and_follows_scvi_verbosity(caplog, scvi_level):
    assert logger.propagate
    scvi_level.setLevel(logging.INFO)
    logger.info("shown at INFO")
    scvi_level.setLevel(logging.WARNING)
    logger.info("hidden at WARNING")
    logger.warning("a warning")
    logger.setLevel(logging.DEBUG)  # a level set on the trajvi logger wins
    logger.debug("explicit debug")
    messages = [r.getMessage() for r in caplog.records if r.name == "trajvi"]
    assert messages == ["shown at INFO", "a warning", "explicit debug"]


def test_without_root_handlers_records_go_to_scvis_handlers(monkeypatch, scvi_level):
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(scvi_level, "handlers", [Collect()])
    scvi_level.setLevel(logging.INFO)
    logger.info("through scvi-tools' handler")
    assert seen == ["through scvi-tools' handler"]


def _script(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_a_plain_script_shows_info_once():
    shown = _script("import trajvi; trajvi.logger.info('hello')")
    assert shown.stderr.count("hello") == 1
    configured = _script("import logging; logging.basicConfig(); import trajvi; trajvi.logger.info('hello')")
    assert (configured.stdout + configured.stderr).count("hello") == 1  # by propagation, not twice
