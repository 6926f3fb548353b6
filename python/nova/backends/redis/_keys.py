"""Redis key names used by the backend (all under the ``nova:`` prefix).

=======================================  ==========================================================
``nova:topics``                          set of topic names
``nova:{topic}:config``                  the topic's config, canonical JSON (string, set once)
``nova:{topic}:deleted``                 tombstone left by ``delete_topic`` (an hour)
``nova:{topic}:{p}``                     stream of partition ``p``
``nova:{topic}:dlq``                     dead-letter stream
``nova:{topic}:{p}:lease:{cg}``          lease of partition ``p`` for consumer group ``cg``
``nova:{topic}:seen:{cg}:{event id}``    EXACTLY_ONCE: event processed by ``cg`` (with a TTL)
``nova:{cg}:members``                    sorted set of live processes of ``cg`` (score: expiry ms)
=======================================  ==========================================================

``cg`` (the Redis consumer group) is ``{group}:{subscriber}``.
"""

from __future__ import annotations

__all__ = ["TOPICS", "config", "tombstone", "stream", "dlq", "lease", "seen", "members", "consumer_group"]

TOPICS = "nova:topics"


def config(topic: str) -> str:
    return f"nova:{topic}:config"


def tombstone(topic: str) -> str:
    return f"nova:{topic}:deleted"


def stream(topic: str, partition: int) -> str:
    return f"nova:{topic}:{partition}"


def dlq(topic: str) -> str:
    return f"nova:{topic}:dlq"


def lease(topic: str, partition: int, cg: str) -> str:
    return f"nova:{topic}:{partition}:lease:{cg}"


def seen(topic: str, cg: str, event_id: str) -> str:
    return f"nova:{topic}:seen:{cg}:{event_id}"


def members(cg: str) -> str:
    return f"nova:{cg}:members"


def consumer_group(group: str, subscriber: str) -> str:
    return f"{group}:{subscriber}"
