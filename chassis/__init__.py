"""The service chassis: what every KAP service wires the same way.

Settings, clock, Kafka broker and event publishing, dead letters, health and
logging. No business rules live here; contracts live in `shared`.
"""
