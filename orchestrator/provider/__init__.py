"""The LegitSMS HTTP client (httpx, typed errors, tenacity per endpoint); the shared rate limit."""
