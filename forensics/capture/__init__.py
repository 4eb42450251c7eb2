"""Reading evidence: sources (directory, tar), storage layouts, hashing, mount tables."""
