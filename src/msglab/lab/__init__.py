"""The delivery lab: scenarios with faults on real servers, raw evidence, and the checker."""
