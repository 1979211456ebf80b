"""The shared core of the hypernetwork editors (MEND, MALMEN, RLEdit)."""
