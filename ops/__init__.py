"""Operator tooling (`kapctl`): talks to Kafka and Redis, never imports a service."""
