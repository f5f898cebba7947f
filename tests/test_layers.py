"""The import contracts in ``.importlinter`` hold, and they can fail.

``make lint`` runs the same check; here it is part of the suite, and each kind of contract
is shown to catch a deliberately wrong import in a copy of the packages (only their ``.py``
files are copied: import-linter reads sources, it imports nothing).
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"
PACKAGES = ("dios", "processing", "native", "drivers", "simulators")


def _lint_imports() -> str:
    script = Path(sys.executable).with_name("lint-imports")
    if script.exists():
        return str(script)
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]' (import-linter)")
    return found


def _contract_names() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG, encoding="utf-8")
    prefix = "importlinter:contract:"
    return {s[len(prefix):]: parser[s]["name"] for s in parser.sections() if s.startswith(prefix)}


def run_lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the repository's contracts on the packages found in ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree), COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return subprocess.run(
        [_lint_imports(), str(CONFIG), "--no-cache", "--no-logo"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120,
    )


def broken(output: str) -> set[str]:
    """Names of the contracts the summary reports as broken."""
    return {m.group(1) for m in re.finditer(r"^(.+?) BROKEN\b", output, re.MULTILINE)}


def copy_sources(dest: Path) -> None:
    """Copy the project's packages, ``.py`` files only, into ``dest``."""
    def not_python(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__"
                or (not n.endswith(".py") and not (Path(folder) / n).is_dir())]

    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=not_python)


def test_every_contract_is_kept() -> None:
    result = run_lint(ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"import contracts broken:\n{output}"
    names = _contract_names()
    assert names, f"no contracts in {CONFIG}"
    for name in names.values():
        assert f"{name} KEPT" in output, output


# (module to edit, wrong import appended to it, contract that must break, import as reported)
VIOLATIONS = [
    ("processing/window.py", "import dios.study", "processing-pure",
     "processing.window -> dios.study"),
    ("native/__init__.py", "import processing.lut", "native-leaf",
     "native -> processing.lut"),
    ("drivers/generator_protocol.py", "import simulators.generator", "drivers-allowed",
     "drivers.generator_protocol -> simulators.generator"),
    ("simulators/generator_wire.py", "import drivers.generator_serial", "simulators-allowed",
     "simulators.generator_wire -> drivers.generator_serial"),
    ("dios/task/service.py", "import simulators.room", "simulators-plugged-in",
     "dios.task.service -> simulators.room"),
    ("dios/codes.py", "import dios.bus", "dios-layers",
     "dios.codes -> dios.bus"),
    ("dios/shim/envelope.py", "import dios.store.db", "shim-thin",
     "dios.shim.envelope -> dios.store.db"),
    ("dios/study/service.py", "import dios.catalog.service", "services-independent",
     "dios.study.service -> dios.catalog.service"),
]


@pytest.mark.parametrize(("module", "statement", "contract", "reported"), VIOLATIONS,
                         ids=[v[2] for v in VIOLATIONS])
def test_a_wrong_import_breaks_its_contract(
    tmp_path: Path, module: str, statement: str, contract: str, reported: str
) -> None:
    copy_sources(tmp_path)
    target = tmp_path / module
    assert target.exists(), f"{module} is gone: pick another module for this case"
    with target.open("a", encoding="utf-8") as f:
        f.write(f"\n{statement}  # deliberately wrong: tests/test_layers.py\n")

    result = run_lint(tmp_path)
    output = result.stdout + result.stderr
    name = _contract_names()[contract]
    assert result.returncode != 0, output
    assert name in broken(output), f"{contract!r} not reported broken:\n{output}"
    # The copy, not the installed tree, was checked, and the injected import is the one named.
    assert reported in output, output


def test_a_module_without_a_layer_breaks_the_layers(tmp_path: Path) -> None:
    copy_sources(tmp_path)
    (tmp_path / "dios" / "unplaced.py").write_text('"""Not in any layer."""\n', encoding="utf-8")

    result = run_lint(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert _contract_names()["dios-layers"] in broken(output), output
    assert "dios.unplaced" in output, output
