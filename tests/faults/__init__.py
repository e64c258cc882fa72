"""The fault-injection suite: real `orc` processes, real RabbitMQ and PostgreSQL, and a
fault per scenario (see docs/failures.md)."""
