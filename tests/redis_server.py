"""The test session's Redis: the product's private ``redis-server`` helper."""

from groundwire.server.measure.redis_process import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]
