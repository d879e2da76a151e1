"""Authentication endpoints: exchange a username and password for an API token, revoke it, and say who the
credentials belong to."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api_support import ERRORS, LoginThrottle
from feedback.authentication import token_forget


class TokenObtainApi(APIView):
    """Exchange a username and password for an API token (send it as ``Authorization: Token <key>``)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginThrottle]

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        user_id = serializers.IntegerField()
        username = serializers.CharField()

    @extend_schema(request=AuthTokenSerializer, responses={200: OutputSerializer, 400: ERRORS[400]}, auth=[])
    def post(self, request: Request) -> Response:
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        token, _ = Token.objects.get_or_create(user=user)
        data = {"token": token.key, "user_id": user.pk, "username": user.get_username()}
        return Response(self.OutputSerializer(data).data)


class TokenRevokeApi(APIView):
    """Delete the caller's token (a new one is issued at the next obtain)."""

    @extend_schema(request=None, responses={204: None, **ERRORS})
    def post(self, request: Request) -> Response:
        for token in Token.objects.filter(user=request.user):
            token_forget(token.key)
            token.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    """Who the credentials belong to."""

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.IntegerField(source="pk")
        username = serializers.CharField(source="get_username")
        is_staff = serializers.BooleanField()

    @extend_schema(responses={200: OutputSerializer, **ERRORS})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(request.user).data)
