"""Lua scripts: leases (take, renew, compare-and-delete), membership, batched XADD, topic
creation. redis-py loads them on first use and again after a server restart (NOSCRIPT)."""

from __future__ import annotations

import redis
from redis.commands.core import Script

__all__ = ["Scripts"]

# KEYS[1] lease key; ARGV[1] owner; ARGV[2] ttl ms. Ours: extend. Free: take. Else 0.
_ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Extend only a lease that is still ours (a lapsed one is never silently re-taken here).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Compare-and-delete.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] members zset; ARGV[1] member; ARGV[2] ttl ms. Server time, so clocks of the hosts
# do not matter. Returns the number of live members.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl * 3)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: the streams of the batch; ARGV[1]: MINID for retention ('' for none); ARGV[2]: the
# events, each as "<index in KEYS>:<byte length>:<payload>", concatenated. One argument for
# the whole batch instead of two per event: the client packs far less.
_XADD_MANY = """
local minid = ARGV[1]
local blob = ARGV[2]
local pos, n, size = 1, 0, #blob
while pos <= size do
  local c1 = string.find(blob, ':', pos, true)
  local c2 = string.find(blob, ':', c1 + 1, true)
  local len = tonumber(string.sub(blob, c1 + 1, c2 - 1))
  local key = KEYS[tonumber(string.sub(blob, pos, c1 - 1))]
  local payload = string.sub(blob, c2 + 1, c2 + len)
  if minid == '' then
    redis.call('XADD', key, '*', 'event', payload)
  else
    redis.call('XADD', key, 'MINID', '~', minid, '*', 'event', payload)
  end
  pos = c2 + len + 1
  n = n + 1
end
return n
"""

# A non-blocking XREADGROUP whose reply is one string instead of nested arrays (parsing the
# nested reply in Python costs more than the rest of the consumer's work). KEYS[1] stream;
# ARGV: group, consumer, count, start id, noack ('1'/'0'). Each entry is
# "<id> <kind> <length> <payload>": kind 'e' (payload: the event field), 'x' (no event
# field), 'd' (deleted while pending).
_READ = """
local r
if ARGV[5] == '1' then
  r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'NOACK',
                 'STREAMS', KEYS[1], ARGV[4])
else
  r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                 'STREAMS', KEYS[1], ARGV[4])
end
if not r then return '' end
local out = {}
for _, e in ipairs(r[1][2]) do
  local f = e[2]
  local kind, payload = 'd', ''
  if f then
    kind = 'x'
    for i = 1, #f, 2 do
      if f[i] == 'event' then
        kind = 'e'
        payload = f[i + 1]
        break
      end
    end
  end
  out[#out + 1] = e[1] .. ' ' .. kind .. ' ' .. #payload .. ' ' .. payload
end
return table.concat(out)
"""

# KEYS[1] config key, KEYS[2] topic set, KEYS[3] tombstone; ARGV[1] config JSON, ARGV[2]
# topic name. Returns '' when this call created the topic, else the stored config.
_CREATE_TOPIC = """
local cur = redis.call('GET', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[2])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
return ''
"""


class Scripts:
    """The scripts, registered on one client (usable with its pipelines too)."""

    def __init__(self, client: redis.Redis) -> None:
        self.acquire: Script = client.register_script(_ACQUIRE)
        self.renew: Script = client.register_script(_RENEW)
        self.release: Script = client.register_script(_RELEASE)
        self.heartbeat: Script = client.register_script(_HEARTBEAT)
        self.xadd_many: Script = client.register_script(_XADD_MANY)
        self.create_topic: Script = client.register_script(_CREATE_TOPIC)
        self.read: Script = client.register_script(_READ)
