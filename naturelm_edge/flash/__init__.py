"""``edge flash``: put a bundle on devices safely (transfer, verify, atomic switch, health check, rollback)."""
