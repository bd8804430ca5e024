"""`groundwire reindex`: build a new generation of the index with another embedder beside
the live one, compare, switch atomically, roll back (see ``command``)."""
