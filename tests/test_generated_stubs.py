"""The committed stubs are what protos/ generates, and the installed packages import from anywhere."""

from __future__ import annotations

import subprocess

from tests.support.procs import PYTHON, REPO, base_env


def test_committed_stubs_are_current():
    r = subprocess.run([PYTHON, "-m", "services.tools.genprotos", "--check"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "current" in r.stdout


def test_packages_import_outside_the_repo(tmp_path):
    code = ("import tollgate.v1.inference_service_pb2_grpc, services, gateway_http, services.__main__, "
            "gateway_http.app, tollgate.client; print('ok')")
    r = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, env=base_env(tmp_path), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_generated_services_match_the_protos():
    """Each service the server registers is in the generated descriptors under tollgate.v1."""
    from tollgate.v1 import admin_service_pb2, inference_service_pb2, key_service_pb2, model_service_pb2

    names = {s.full_name for m in (admin_service_pb2, inference_service_pb2, key_service_pb2, model_service_pb2)
             for s in m.DESCRIPTOR.services_by_name.values()}
    assert names == {"tollgate.v1.AdminService", "tollgate.v1.InferenceService", "tollgate.v1.KeyService",
                     "tollgate.v1.ModelService"}
