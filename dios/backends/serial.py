"""``serial://``, ``socket://``, ``spy://``, ``loop://``: the generator's serial protocol.

The real generator driver (:mod:`drivers.generator_serial`) reached through pyserial's
``serial_for_url``, so one driver talks to a port, a TCP serial bridge or a hexdumping
spy unchanged::

    generator = "serial:///dev/ttyUSB0?baud=19200&timeout=0.5&retries=3"
    generator = "socket://127.0.0.1:5001?timeout=1"
    generator = "spy:///dev/ttyUSB0?timeout=1"       # the port, traffic hexdumped

Link settings in the query: ``baud`` (serial ports only; 1200-921600, default 19200),
``timeout`` (seconds to wait for a reply, default 0.5), ``retries`` (resends of a lost or
corrupt reply, default 2); ``spy://`` also takes pyserial's ``file`` (where the hexdump
goes). The driver's waits run on the wall clock, whatever the
engine's ``clock_scale`` says.
"""

from __future__ import annotations

from dios.backends.registry import BackendError, BackendURL, BuildContext, Built, register

_KEYS = ("baud", "timeout", "retries")


def _settings(url: BackendURL) -> dict[str, float | int]:
    out: dict[str, float | int] = {
        "timeout": url.number("timeout", 0.5, 0.01, 60.0),
        "retries": url.integer("retries", 2, 0, 10),
    }
    if "baud" in url.query:
        if url.scheme != "serial":
            raise BackendError(f"{url.text}: baud applies to serial:// ports only")
        out["baudrate"] = url.integer("baud", 19200, 1200, 921600)
    return out


def pyserial_url(url: BackendURL) -> str:
    """The URL pyserial's ``serial_for_url`` takes: a device path for ``serial://``,
    the URL without the engine's query otherwise (``spy://`` wraps ``socket://``)."""
    if url.scheme == "serial":
        if not url.target.startswith("/"):
            raise BackendError(f"{url.text}: serial:// needs a device path, e.g. "
                               "serial:///dev/ttyUSB0")
        return url.target
    if url.scheme == "socket":
        host, _, port = url.target.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BackendError(f"{url.text}: socket:// needs host:port")
    if url.scheme == "spy" and "file" in url.query:
        return f"spy://{url.target}?file={url.query['file']}"
    return f"{url.scheme}://{url.target}"


def _generator(url: BackendURL, ctx: BuildContext) -> Built:
    from drivers.generator_serial import SerialGeneratorBackend

    settings = _settings(url)
    return Built(SerialGeneratorBackend(pyserial_url(url), **settings), simulated=False)


def _validate(url: BackendURL) -> None:
    _settings(url)
    pyserial_url(url)


_generator.validate = _validate  # type: ignore[attr-defined]

for _scheme, _what in (("serial", "a serial port"), ("socket", "a TCP serial bridge"),
                       ("spy", "a serial port, traffic hexdumped"),
                       ("loop", "pyserial's loopback (tests)")):
    register("generator", _scheme, _generator, _KEYS + (("file",) if _scheme == "spy" else ()),
             f"the generator's serial protocol over {_what}")
