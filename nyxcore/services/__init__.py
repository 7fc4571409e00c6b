"""Domain logic. Services flush and raise domain errors; the caller owns the transaction."""
