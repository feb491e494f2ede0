"""What a person reads: the HTML pages (one shared base) and the metrics gate. Pages take plain data, never domain objects."""
