import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_openapi_schema_has_no_errors_or_warnings(tmp_path):
    # Every API view declares its request and response shapes: a view drf-spectacular cannot read fails here.
    call_command("spectacular", "--file", str(tmp_path / "schema.yml"), "--validate", "--fail-on-warn")
    assert "/api/v1/training-runs/" in (tmp_path / "schema.yml").read_text()
