"""PostgreSQL wire protocol proxy: the authoritative SQL enforcement point for postgres resources."""
