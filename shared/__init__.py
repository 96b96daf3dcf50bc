"""The contracts every KAP service and partner agrees on: events, topics, envelope.

Contracts only: no business rules and no I/O live here.
"""
