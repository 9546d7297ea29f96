"""scripts/import_layers.py in `make test`: no import runs back up the layers of docs/architecture.md."""

from __future__ import annotations

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checker():
    spec = importlib.util.spec_from_file_location("import_layers", os.path.join(ROOT, "scripts", "import_layers.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_import_runs_back_up_the_layers():
    found = _checker().findings(ROOT)
    assert found == [], "imports against docs/architecture.md's layers:\n" + "\n".join(found)


def test_the_check_sees_an_upward_import(tmp_path):
    """The check itself: a provider importing routing, and the bridge importing services, are found."""
    for d in ("services/providers", "services/routing", "gateway_http", "clients/tollgate"):
        os.makedirs(tmp_path / d)
    (tmp_path / "services/providers/x.py").write_text("from services.routing.router import Router\n")
    (tmp_path / "services/routing/router.py").write_text("from services.providers import x\n")
    (tmp_path / "gateway_http/y.py").write_text("from services.core.errors import Internal\nimport tollgate.client\n")
    mod = _checker()
    mod.ALLOWED = {}
    found = mod.findings(str(tmp_path))
    assert len(found) == 2, found
    assert "services/providers/x.py:1: services.providers.x" in found[1] and "import up the layers" in found[1]
    assert found[0].startswith("gateway_http/y.py:1: the bridge imports services.core.errors.Internal")
