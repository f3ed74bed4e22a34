"""Token credentials: DefaultAzureCredential in Azure, a static token for the local emulators."""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential

from shared.settings import Settings


class StaticTokenCredential:
    """A ``TokenCredential`` that always returns the same token.

    Only for the loopback emulators (settings refuse it for any other host): the emulators check that
    a bearer token is present, never what it says, so no request ever goes through Entra ID.
    """

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


def build_credential(settings: Settings, client_id: str | None = None) -> TokenCredential:
    """The app's credential, or with ``client_id`` one more identity's (``SYNC_DATAVERSE_CLIENT_IDS``)."""
    if settings.credential == "static":
        assert settings.static_token is not None  # checked by Settings
        token = settings.static_token.get_secret_value()
        # The emulators tell users apart by their bearer token, as Dataverse does by identity.
        return StaticTokenCredential(f"{token}.{client_id}" if client_id else token)
    # Imported here so the emulator path does not pay for azure-identity's import.
    from azure.identity import DefaultAzureCredential

    # Managed identity in Azure (AZURE_CLIENT_ID selects a user-assigned one), developer logins locally;
    # an extra identity is another user-assigned managed identity of the Function App.
    if client_id:
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    return DefaultAzureCredential()
