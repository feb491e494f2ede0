"""What a person reads: the report site (navigation, static SVG charts, a page per stage), the metrics gate and the model card. Pages take plain data, never domain objects."""
