"""The site's data: its configuration, loading and mapping to the contract, OMOP, the cache, the fingerprint, the check."""
