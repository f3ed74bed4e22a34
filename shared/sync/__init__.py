"""The sync engine and the business-event payload model."""
