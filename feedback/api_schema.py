"""OpenAPI schema generation (drf-spectacular) for the HackSoft-style views of every app."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import serializers


class AutoSchema(SpectacularAutoSchema):
    """Names nested HackSoft-style serializers after their view: ProjectListApi.OutputSerializer becomes the
    component ``ProjectListApiOutput`` (every view has its own ``InputSerializer``/``OutputSerializer``)."""

    def get_serializer_name(self, serializer: serializers.BaseSerializer, direction: str) -> str:
        cls = serializer.__class__
        qualname = cls.__qualname__.replace(".", "")
        if "." in cls.__qualname__:
            return qualname.removesuffix("Serializer")
        return super().get_serializer_name(serializer, direction)
