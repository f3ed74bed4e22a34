"""Commerce headquarters (F&O) OData client."""
