"""Configuration loading: defaults, TOML, loud errors."""

from __future__ import annotations

import pytest

from dios.config import ConfigError, load_config


def test_defaults_bind_loopback_and_use_simulators(tmp_path):
    cfg = load_config()
    assert cfg.http.host == "127.0.0.1" and cfg.rpc.host == "127.0.0.1"
    assert cfg.devices.generator == "simulator://" and cfg.devices.detector == "simulator://"
    cfg = load_config(data_dir=tmp_path)
    assert cfg.database_url == f"sqlite:///{(tmp_path / 'dios.db').resolve()}"


def test_toml_file(tmp_path):
    p = tmp_path / "dios.toml"
    p.write_text('data_dir = "/tmp/x"\nproduct = "VETDROS"\n[http]\nport = 9000\n'
                 '[devices]\npanel = "FLUORO_1024"\nclock_scale = 10\n'
                 '[database]\nurl = "postgresql://dios@127.0.0.1:5432/dios"\n')
    cfg = load_config(p)
    assert (cfg.product, cfg.http.port, cfg.http.host) == ("VETDROS", 9000, "127.0.0.1")
    assert cfg.devices.clock_scale == 10.0 and cfg.devices.panel == "FLUORO_1024"
    assert cfg.database_url.startswith("postgresql://")


@pytest.mark.parametrize("text,needle", [
    ("product = 'X'", "product"),
    ("[http]\nport = 70000", "port"),
    ("[http]\nport = 'a'", "port must be an integer"),
    ("[devices]\ngenerator = 'usb'", "generator"),
    ("[devices]\ngenerator = 'usb://x'", "unknown scheme 'usb'"),
    ("[devices]\ngenerator = 'serial:///dev/ttyUSB0?baud=12'", "baud=12 outside"),
    ("[devices]\ngenerator = 'socket://127.0.0.1:5001?bogus=1'", "unknown setting"),
    ("[devices]\ngenerator = 'socket://127.0.0.1'", "host:port"),
    ("[devices]\ndetector = 'simulator://NOPE'", "unknown panel"),
    ("[devices]\ndetector = 'simulator://?xrays=sky'", "xrays"),
    ("[devices]\ntimeout = true", "timeout must be a number"),
    ("[http]\nmax_connections = 0", "max_connections must be within"),
    ("[http]\nheader_timeout = 0", "header_timeout must be within"),
    ("[http]\nbody_timeout = -1.5", "body_timeout must be within"),
    ("[http]\nidle_timeout = 1e9", "idle_timeout must be within"),
    ("[http]\ncors_origins = 'https://ui.example'", "cors_origins must be an array"),
    ("[http]\ncors_origins = ['https://ui.example/app']", "is not an origin"),
    ("[http]\ncors_origins = [7]", "is not an origin"),
    ("[http]\nbogus = 1", "unknown key"),
    ("[rpc]\nmax_connections = 0", "max_connections must be within"),
    ("[rpc]\nmax_connections = 8\nmax_connections_per_address = 9", "must not exceed"),
    ("[rpc]\nmax_subscriptions = 200", "must not exceed"),
    ("[rpc]\nmax_pending_bytes = 10", "max_pending_bytes must be within"),
    ("[rpc]\nauth_timeout = 0", "auth_timeout must be within"),
    ("[rpc]\nwrite_timeout = 'soon'", "write_timeout must be a number"),
    ("[rpc]\nidle_timeout = -1", "idle_timeout must be within"),
    ("[acquisition]\nexposure_timeout = 0.1", "exposure_timeout"),
    ("[acquisition]\nbogus = 1", "unknown key"),
    ("[devices]\nclock_scale = 0", "clock_scale"),
    ("bogus = 1", "unknown top-level"),
    ("[devices]\nfoo = 1", "unknown key"),
    ("uid_root = '1.2.03'", "uid_root"),
    ("this is not toml", "dios.toml"),
])
def test_bad_config_is_a_clear_error(tmp_path, text, needle):
    p = tmp_path / "dios.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(p)


def test_listener_limits_defaults_and_file(tmp_path):
    cfg = load_config()
    h = cfg.http
    assert (h.max_connections, h.header_timeout, h.body_timeout, h.idle_timeout,
            h.cors_origins) == (256, 10.0, 30.0, 5.0, [])
    assert cfg.rpc.server_options() == {
        "max_connections": 256, "max_connections_per_address": 64, "idle_timeout": 300.0,
        "auth_timeout": 30.0, "max_subscriptions": 32, "max_subscriptions_per_user": 128,
        "max_pending_bytes": 67108864, "write_timeout": 10.0}
    p = tmp_path / "dios.toml"
    p.write_text("[http]\nmax_connections = 12\nheader_timeout = 2\nbody_timeout = 3.5\n"
                 "idle_timeout = 1\ncors_origins = ['https://ui.example:8443', 'file://']\n"
                 "[rpc]\nmax_connections = 100\nmax_subscriptions = 4\nwrite_timeout = 2\n")
    cfg = load_config(p)
    assert (cfg.http.max_connections, cfg.http.header_timeout, cfg.http.body_timeout) == (12, 2.0, 3.5)
    assert cfg.http.idle_timeout == 1.0 and isinstance(cfg.http.idle_timeout, float)
    assert cfg.http.cors_origins == ["https://ui.example:8443", "file://"]
    opts = cfg.rpc.server_options()
    assert (opts["max_connections"], opts["max_subscriptions"], opts["write_timeout"]) == (100, 4, 2.0)
    assert set(opts) == set(type(cfg.rpc).SERVER_OPTIONS)


def test_every_http_key_reaches_the_listener(tmp_path):
    """The [http] keys are what the listener and the shim are built with."""
    from dios.serve import http_settings
    from dios.shim.listener import GuardedH11Protocol, ListenerLimits, ListenerStats

    p = tmp_path / "dios.toml"
    p.write_text("[http]\nmax_connections = 7\nheader_timeout = 2\nbody_timeout = 3\n"
                 "idle_timeout = 4\ncors_origins = ['http://a.example']\n")
    http = http_settings(load_config(p))
    limits = ListenerLimits(max_connections=http.max_connections,
                            header_timeout=http.header_timeout,
                            body_timeout=http.body_timeout, idle_timeout=http.idle_timeout)
    opts = limits.uvicorn_options(ListenerStats())
    assert opts["timeout_keep_alive"] == 4.0
    assert issubclass(opts["http"], GuardedH11Protocol) and opts["http"].limits == limits


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("url", [
    "simulator", "simulator://", "serial:socket://127.0.0.1:5001",
    "socket://127.0.0.1:5001?timeout=1&retries=3", "serial:///dev/ttyUSB0?baud=19200&timeout=0.5",
    "spy:///dev/ttyUSB0?file=trace.txt", "loop://",
])
def test_generator_urls(tmp_path, url):
    p = tmp_path / "dios.toml"
    p.write_text(f"[devices]\ngenerator = '{url}'\ndetector = 'simulator://FLUORO_1024?xrays=events'\n")
    assert load_config(p).devices.generator == url


def test_sections_are_registered_once():
    from dios.config import SECTIONS

    assert {"http", "rpc", "database", "devices", "acquisition"} <= set(SECTIONS)


def test_listener_keys_reach_the_running_servers(tmp_path):
    """A console started from a file applies its [http] and [rpc] limits."""
    from dios.serve import Console

    p = tmp_path / "dios.toml"
    p.write_text(f"data_dir = '{tmp_path / 'data'}'\n"
                 "[http]\nport = 0\nmax_connections = 9\nheader_timeout = 2\nbody_timeout = 3\n"
                 "idle_timeout = 4\ncors_origins = ['http://ui.example']\n"
                 "[rpc]\nport = 0\nmax_connections = 11\nmax_connections_per_address = 5\n"
                 "idle_timeout = 60\nauth_timeout = 7\nmax_subscriptions = 3\n"
                 "max_subscriptions_per_user = 6\nmax_pending_bytes = 1048576\nwrite_timeout = 2\n"
                 "[devices]\npanel = 'FLUORO_1024'\n")
    console = Console(load_config(p), calibrate=False,
                      auth_options={"scrypt_params": (2**10, 8, 1)}).start()
    try:
        uv = console.http_server.config
        assert uv.http_protocol_class.limits.max_connections == 9
        assert (uv.http_protocol_class.limits.header_timeout,
                uv.http_protocol_class.limits.body_timeout, uv.timeout_keep_alive) == (2.0, 3.0, 4.0)
        assert console.shim.cors_origins == ("http://ui.example",)
        rpc = console.rpc
        assert (rpc.max_connections, rpc.max_connections_per_address, rpc.idle_timeout,
                rpc.auth_timeout, rpc.max_subscriptions, rpc.max_subscriptions_per_user,
                rpc.max_pending_bytes, rpc.write_timeout) == (11, 5, 60.0, 7.0, 3, 6, 1 << 20, 2.0)
    finally:
        console.stop()
