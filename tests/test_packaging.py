"""The wheel carries every package: a module missing from pyproject's list works in the editable checkout but
breaks ``pip install .`` (the container, the systemd install)."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO


def test_every_package_directory_is_listed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "pamd").rglob("__init__.py")
    } | {"pamd_plugins"}
    assert found == listed
    assert config["package-dir"] == {"pamd_plugins": "plugins"}
    assert "*.sql" in config["package-data"]["pamd.store"]


def test_no_module_directory_lacks_an_init() -> None:
    # A directory of modules without __init__.py is a namespace package: the list above would not see it.
    missing = sorted(str(d.relative_to(REPO)) for d in {p.parent for p in (REPO / "pamd").rglob("*.py")}
                     if not (d / "__init__.py").exists())
    assert missing == []
