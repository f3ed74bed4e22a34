"""Points balances: the aggregate template kind (fold, lines, engine)."""
