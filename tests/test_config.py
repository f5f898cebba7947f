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
    ("[http]\nport = 'a'", "port must be int"),
    ("[devices]\ngenerator = 'usb'", "generator"),
    ("[devices]\ngenerator = 'usb://x'", "unknown scheme 'usb'"),
    ("[devices]\ngenerator = 'serial:///dev/ttyUSB0?baud=12'", "baud=12 outside"),
    ("[devices]\ngenerator = 'socket://127.0.0.1:5001?bogus=1'", "unknown setting"),
    ("[devices]\ngenerator = 'socket://127.0.0.1'", "host:port"),
    ("[devices]\ndetector = 'simulator://NOPE'", "unknown panel"),
    ("[devices]\ndetector = 'simulator://?xrays=sky'", "xrays"),
    ("[devices]\ntimeout = true", "timeout must be float"),
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
