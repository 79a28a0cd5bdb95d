"""The site's governance: the app versions it approved and its hash-chained audit log."""
