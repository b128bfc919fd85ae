"""The SQL store: schema, engine set-up, the batched record writer and key/tenant queries."""
