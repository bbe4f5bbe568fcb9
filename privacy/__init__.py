"""Privacy machinery (DP-SGD, privacy ledger, secure aggregation, keys); see issue #3."""

__all__: list[str] = []
