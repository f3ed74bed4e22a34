"""Local emulators of the Dataverse Web API and the F&O / Commerce OData API (test and demo equipment, never deployed)."""
