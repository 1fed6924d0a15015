"""Throttles that fail open: when the cache behind them is down, requests go through with a logged
warning instead of failing (a sign-in must not answer 500 because Redis is away)."""

import logging

from redis.exceptions import RedisError
from rest_framework.throttling import ScopedRateThrottle

logger = logging.getLogger(__name__)


class FailOpenScopedRateThrottle(ScopedRateThrottle):
    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as error:  # what Django's Redis cache raises when the server is away
            logger.warning("Throttle %r not applied: its cache is unavailable (%r)", self.scope, error)
            return True
