"""The test session's Redis: the product's private ``redis-server`` helper."""

from groundwire.testing.redis_process import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]
