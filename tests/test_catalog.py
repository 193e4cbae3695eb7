"""registry.toml agrees with the directories, their pyprojects and what installed plugins register."""

import sys
from pathlib import Path

import pytest

import gradkit_core as gk
from gradkit_core import catalog

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = sorted(p.parent for p in [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("envs/*/pyproject.toml")])


def entries():
    return {e.name: e for e in catalog.entries()}


def test_catalog_ships_in_the_package_and_is_the_top_level_file():
    path = catalog.catalog_path()
    assert path == ROOT / "gradkit_core" / "registry.toml", "the catalog is package data of gradkit_core"
    assert path.resolve() == (ROOT / "registry.toml").resolve(), "in a checkout it is the top-level registry.toml"
    assert entries(), "registry.toml lists no package"


@pytest.mark.parametrize("pkg_dir", PACKAGE_DIRS, ids=[p.name for p in PACKAGE_DIRS])
def test_requires_lists_exactly_the_first_party_dependencies(pkg_dir):
    import re

    e = entries()[pkg_dir.name]
    meta = tomllib.loads((pkg_dir / "pyproject.toml").read_text())
    deps = {re.split(r"[<>=!~\[; ]", d)[0] for d in meta["project"]["dependencies"]}
    first_party = {d[len("gradkit-"):] for d in deps if d.startswith("gradkit-") and d != "gradkit-core"}
    assert set(e.requires) == first_party, f"{pkg_dir.name}: registry.toml requires {sorted(e.requires)}, " \
                                           f"pyproject depends on {sorted(first_party)}"
    assert "gradkit-core" in {d for d in deps}, f"{pkg_dir.name} must depend on gradkit-core"


@pytest.mark.parametrize("pkg_dir", PACKAGE_DIRS, ids=[p.name for p in PACKAGE_DIRS])
def test_every_package_directory_is_catalogued_with_matching_names(pkg_dir):
    name = pkg_dir.name
    e = entries().get(name)
    assert e is not None, f"{pkg_dir.relative_to(ROOT)} is not in registry.toml"
    assert e.directory == str(pkg_dir.relative_to(ROOT))
    assert e.section == pkg_dir.parent.name, f"{name} belongs in [{pkg_dir.parent.name}.{name}]"
    meta = tomllib.loads((pkg_dir / "pyproject.toml").read_text())
    assert meta["project"]["name"] == e.distribution == f"gradkit-{name}"
    eps = meta["project"]["entry-points"]["gradkit"]
    assert eps == {name: f"gradkit_{name}"}, f"entry point must be {name} = gradkit_{name}"
    assert (pkg_dir / "src" / f"gradkit_{name}" / "__init__.py").is_file()
    assert set(e.components) <= set(gk.kinds()), f"unknown kinds in {name}: {set(e.components) - set(gk.kinds())}"


def test_catalog_lists_no_missing_directory():
    for e in entries().values():
        assert (ROOT / e.directory / "pyproject.toml").is_file(), f"{e.name}: {e.directory} does not exist"


def test_every_catalogued_component_is_registered_when_installed():
    installed = {p.name: p for p in gk.plugins()}
    for e in entries().values():
        assert e.name in installed, f"{e.distribution} is not installed (the test command installs every package)"
        assert installed[e.name].status == "ok", f"{e.name}: {installed[e.name].status}: {installed[e.name].error}"
        have = {(s.kind, s.name) for s in gk.list(plugin=e.name)}
        want = {(k, n) for k, names in e.components.items() for n in names}
        assert want == have, f"{e.name}: catalogued-but-unregistered {sorted(want - have)}, " \
                             f"registered-but-uncatalogued {sorted(have - want)}"


def test_install_dry_run_uses_catalog_closure_and_constraints(capsys):
    from gradkit_core import cli

    assert cli.main(["install", "lion", "--dry-run", "-e", "--reinstall"]) == 0
    out = capsys.readouterr().out
    assert "tools/constraints.txt" in out and "-e" in out
    assert str(ROOT / "plugins" / "lion") in out and str(ROOT / "plugins" / "support") in out, \
        "the first-party dependency (support) is installed from the checkout too"
    assert out.index("plugins/support") < out.index("plugins/lion")
    assert cli.main(["install", "no-such-plugin"]) == 2


def test_closure_orders_dependencies_first_and_refuses_unknown_names():
    names = [e.name for e in catalog.closure(["cfcam", "lion"])]
    assert names == ["support", "cfcam", "lion"]
    with pytest.raises(gk.CatalogError, match="not in the catalog: 'no-such'"):
        catalog.closure(["no-such"])
