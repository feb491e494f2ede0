"""Dataset plumbing below the audit and training: decoding, listing, splits, the decoded cache, grouping, the demo set."""
