"""Fixtures of the server tests: one small fake index, its backend and app."""

from __future__ import annotations

import pytest
from server_fakes import FakeEncoder, build_collection


@pytest.fixture(scope="package")
def built(tmp_path_factory):
    """(index dir, records, items) of 36 fake pictures, six colours."""
    return build_collection(tmp_path_factory.mktemp("srv"))


@pytest.fixture(scope="package")
def backend(built):
    from lexlens.server.backend import Backend

    return Backend.open([built[0]], names=["pics"], encoder=FakeEncoder())


@pytest.fixture(scope="package")
def app(backend):
    from lexlens.server.app import create_app

    return create_app(backend)


@pytest.fixture()
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
