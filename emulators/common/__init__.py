"""Code shared by the emulators: an OData query-option parser and a small HTTP server base."""
