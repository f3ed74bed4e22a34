"""Dataverse Web API client."""
