"""Asyncio plumbing shared by every floor above the wire: background tasks and user callbacks."""
