"""The dataset audit: finding kinds checked per file, similarity, the incremental cache and the report object."""
