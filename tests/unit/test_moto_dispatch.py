"""moto's server finds a request's service without listing its folder each time (stepml/embedded/moto_dispatch.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from moto import backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from stepml.embedded import moto_dispatch


def test_requests_are_dispatched_as_before_without_listing_the_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    before = list(backends.list_of_moto_modules())
    moto_dispatch.install()
    listings = []
    real_listdir = os.listdir

    def counting_listdir(path: Any) -> list[str]:
        listings.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)
    assert list(backends.list_of_moto_modules()) == before
    app = DomainDispatcherApplication(create_backend_app)
    for host in ("s3", "dynamodb", "stepfunctions", "awslambda", "cloudwatch"):
        assert app.get_backend_for_host(host) == host
    assert app.get_backend_for_host("states.us-east-1.amazonaws.com") == "stepfunctions"
    assert listings == []
