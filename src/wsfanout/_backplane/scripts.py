"""The Lua scripts that make a publish atomic in Redis: number, keep, trim, publish.

Theory of operation
-------------------
Every hub publishes through :data:`PUBLISH`, one call per batch, so Redis is the one
place where offsets are assigned and every hub sees the same numbering. For each
message, in one atomic step: the topic's epoch (created, with offset 0 and an empty
stream, when the topic has none: a new topic, or Redis lost its data), the next offset
(``HINCRBY``), the message appended to the topic's stream under that offset as its
entry id (when there is a history), the stream trimmed to its bound, and the message
published on the topic's channel with its epoch and offset. A batch sent again after
a failed connection is not applied twice: the script remembers, per publishing hub
run, the last sequence number it applied.

Keys, under the namespace ``ns``: ``ns:offsets`` and ``ns:epochs`` (hashes: topic to
last offset and epoch; ``""`` is the stream of messages without a topic),
``ns:bytes`` (payload bytes each stream holds, kept only with a byte bound),
``ns:history:<topic>`` (the streams), ``ns:publisher:<hub id>`` (the last batch
applied).

Trimming is exact: after each append the oldest entries go while the stream holds more
than ``max_messages``, more than ``max_bytes`` of payload, or entries older than
``max_age`` (by Redis' clock, ``TIME``). Entries are contiguous offsets (trimming only
ever removes the oldest), so the count needs no scan; bytes and age look at the oldest
entries only, usually one or two of them. :data:`READ` applies the age bound again before
it reads, so nothing older than ``max_age`` is ever served even when no one has published
since.
"""

from __future__ import annotations

__all__ = ["PUBLISH", "READ", "SNAPSHOT", "PUBLISHER_TTL"]

PUBLISHER_TTL = 86_400
"""Seconds a hub's last applied batch is remembered."""

_TRIM = """
local function trim(stream, sizes, name, newest, maxn, maxb, maxage, now)
  local held = redis.call('XLEN', stream)
  if held == 0 then return end
  local head = newest - held + 1
  local drop_to = head
  if held > maxn then drop_to = head + held - maxn end
  if maxb > 0 or maxage > 0 then
    local bytes = 0
    if maxb > 0 then bytes = tonumber(redis.call('HGET', sizes, name) or '0') end
    local from = head
    if maxb == 0 then from = drop_to end
    local cutoff = now - maxage
    local done = false
    -- Usually one entry goes per append: read what the count bound drops and one more,
    -- then twice as many each page, so a full stream costs a read of one or two entries.
    local count = drop_to - from + 1
    while not done and from <= newest do
      local page = redis.call('XRANGE', stream, string.format('%d-0', from), '+', 'COUNT', count)
      count = count * 2
      if #page == 0 then break end
      for _, entry in ipairs(page) do
        local id = tonumber(string.match(entry[1], '^%d+'))
        local fields = entry[2]
        if id < drop_to or (maxb > 0 and bytes > maxb)
            or (maxage > 0 and tonumber(fields[2]) < cutoff) then
          drop_to = id + 1
          if maxb > 0 then bytes = bytes - string.len(fields[6]) end
        else
          done = true
          break
        end
      end
      from = drop_to
    end
    if maxb > 0 then redis.call('HSET', sizes, name, bytes) end
  end
  if drop_to > head then
    redis.call('XTRIM', stream, 'MINID', string.format('%d-0', drop_to))
  end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

PUBLISH = (
    _TRIM
    + """
-- KEYS: offsets, epochs, bytes, publisher, then the stream of each message.
-- ARGV: candidate epoch, hub run, first seq, n, max_messages (0: no history), max_bytes
-- (0: none), max_age in ms (0: none), publisher TTL, pub/sub prefix; then per message:
-- stream name, channel, head, payload.
local offsets, epochs, sizes, publisher = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local first, n = tonumber(ARGV[3]), tonumber(ARGV[4])
local maxn, maxb, maxage = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local prefix = ARGV[9]
local done = 0
local stored = redis.call('GET', publisher)
if stored then
  local sep = string.find(stored, ' ', 1, true)
  if sep and string.sub(stored, 1, sep - 1) == ARGV[2] then
    done = tonumber(string.sub(stored, sep + 1))
  end
end
local now = now_ms()
local applied = 0
for i = 1, n do
  if first + i - 1 > done then
    local base = 9 + (i - 1) * 4
    local name, channel = ARGV[base + 1], ARGV[base + 2]
    local head, payload = ARGV[base + 3], ARGV[base + 4]
    local stream = KEYS[4 + i]
    local epoch = redis.call('HGET', epochs, name)
    if not epoch then
      epoch = ARGV[1]
      redis.call('HSET', epochs, name, epoch)
      redis.call('HSET', offsets, name, 0)
      redis.call('HDEL', sizes, name)
      redis.call('DEL', stream)
    end
    local offset = redis.call('HINCRBY', offsets, name, 1)
    local id = string.format('%d', offset)
    if maxn > 0 then
      redis.call('XADD', stream, id .. '-0', 't', now, 'h', head, 'd', payload)
      if maxb > 0 then redis.call('HINCRBY', sizes, name, string.len(payload)) end
      trim(stream, sizes, name, offset, maxn, maxb, maxage, now)
    end
    redis.call('PUBLISH', channel, prefix .. epoch .. ' ' .. id .. ' ' .. head .. payload)
    applied = applied + 1
  end
end
redis.call('SET', publisher, ARGV[2] .. ' ' .. string.format('%d', first + n - 1), 'EX', ARGV[8])
return applied
"""
)

READ = (
    _TRIM
    + """
-- KEYS: offsets, epochs, bytes, the stream. ARGV: stream name, epoch, after, upto (0: the
-- end), count, max_messages (0: no history), max_bytes, max_age in ms.
-- Returns {epoch, last, after, entries, now}: the entries after `after` (from 0 in another
-- epoch, or when `after` is past the end), up to `upto`, at most `count` of them, and
-- Redis' clock in ms (what the age bound counts from).
local name = ARGV[1]
local epoch = redis.call('HGET', KEYS[2], name)
if not epoch then return {'', 0, 0, {}} end
local last = tonumber(redis.call('HGET', KEYS[1], name) or '0')
local after = tonumber(ARGV[3])
if epoch ~= ARGV[2] or after > last then after = 0 end
local maxn = tonumber(ARGV[6])
if maxn == 0 then return {epoch, last, after, {}} end
local maxage = tonumber(ARGV[8])
local now = now_ms()
if maxage > 0 then
  trim(KEYS[4], KEYS[3], name, last, maxn, tonumber(ARGV[7]), maxage, now)
end
local upto = tonumber(ARGV[4])
local stop = '+'
if upto > 0 then stop = string.format('%d-0', upto) end
local start = string.format('%d-0', after + 1)
local entries = redis.call('XRANGE', KEYS[4], start, stop, 'COUNT', ARGV[5])
return {epoch, last, after, entries, now}
"""
)

SNAPSHOT = """
-- KEYS: offsets, epochs. Returns both hashes, atomically.
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""
