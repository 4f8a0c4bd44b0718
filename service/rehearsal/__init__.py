"""Incident rehearsals: fault injection inside the service and the load generator that drives it from outside."""
