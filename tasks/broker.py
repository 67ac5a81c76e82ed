"""kombu's Redis transport, moving messages in bulk: what lets one worker drain thousands of per-event
messages a second (tasks/app.py makes it the transport of every `redis://` broker URL).

kombu's Redis consumer moves one message per round trip (BRPOP), records it as unacknowledged in a
second (MULTI: ZADD + HSET) and acknowledges it in a third, each through a new redis-py client (which
builds its ~170 response callbacks every time, ~130 µs here: redis/redis-py#3624). Measured on this
2-core machine with a task that does nothing, a worker's main process drained ~1,000 messages/s that
way whatever the task did. This subclass keeps kombu's wire format, keys and unacknowledged-message
records (so restoring, the visibility timeout and `celery purge` work as before) and changes four things:

- after each BRPOP it takes up to the prefetch window's free room more from the same queue in one
  atomic script that also records them as unacknowledged. A window of one message (the training
  queue) leaves no room, so nothing more is taken there. Taken in one script, a message is never out
  of the queue without its unacked record: kombu's BRPOP-then-HSET leaves a gap a Redis restart can
  fall into (celery/kombu#305);
- `QoS.forget_many` drops many messages' unacked records in one round trip (tasks/events.py acks a
  committed batch with it);
- one redis-py client per channel instead of one per command;
- a message may carry one HSET (property WITH_HSET) that is written just before it in the same round
  trip: the per-event path's receipt (tasks/inbox.py) costs no round trip of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis
from kombu.log import get_logger
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

log = get_logger(__name__)

# A message property: [hash key (without the broker's key prefix), field, value], written by HSET in the
# message's own round trip, before its LPUSH, and not part of the message itself.
WITH_HSET = "x-retrainer-hset"
MAX_TAKE = 1000  # messages one script call may take (a window without a limit, prefetch 0, still gets batches)

# KEYS: the queue's lists in the order BRPOP serves them (priority steps), then kombu's unacked hash and
# its index. ARGV: now, room. The raw message is stored as it came ([message, exchange, routing_key],
# what kombu's QoS.append writes); cjson only reads the tag and the routing of each. A message cjson
# cannot read (it refuses lone surrogate escapes, which Python's JSON writes) stays first in its queue
# for the next BRPOP, kombu's own path; nothing is taken out of a queue that is not recorded.
_TAKE = """
local unacked, index = KEYS[#KEYS - 1], KEYS[#KEYS]
local now, room = ARGV[1], tonumber(ARGV[2])
local taken = {}
for i = 1, #KEYS - 2 do
  while #taken < room do
    local raw = redis.call('LINDEX', KEYS[i], -1)
    if not raw then break end
    local ok, message = pcall(cjson.decode, raw)
    if not ok or type(message) ~= 'table' or type(message['properties']) ~= 'table' then return taken end
    local properties = message['properties']
    local info, tag = properties['delivery_info'], properties['delivery_tag']
    if type(info) ~= 'table' or type(tag) ~= 'string' then return taken end
    redis.call('RPOP', KEYS[i])
    redis.call('HSET', unacked, tag,
      '[' .. raw .. ',' .. cjson.encode(info['exchange']) .. ',' .. cjson.encode(info['routing_key']) .. ']')
    redis.call('ZADD', index, now, tag)
    taken[#taken + 1] = raw
  end
end
return taken
"""


class QoS(kombu_redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorded: set[str] = set()  # taken by the script: already in the unacked hash
        self._forgotten: set[str] = set()  # their unacked records already dropped by forget_many

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self._recorded:
            self._recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def forget_many(self, delivery_tags: Iterable[str]) -> None:
        """Drop these messages' unacked records in one round trip; acknowledging each afterwards only
        updates this process's bookkeeping. Call right before acknowledging them."""
        tags = list(delivery_tags)
        if tags:
            with self.pipe_or_acquire() as pipe:  # what QoS.ack removes, for all of them in two commands
                pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
        self._forgotten.update(tags)

    def ack(self, delivery_tag: str) -> None:
        if delivery_tag in self._forgotten:
            self._forgotten.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            super().ack(delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _sync_client: Any = None  # kombu's Channel declares a `_client` of its own
    _take: Any = None  # the registered script, on a client without kombu's key prefixing

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the BRPOP/LISTEN connections: kombu keeps those itself
            return super()._create_client(asynchronous=True)
        if self._sync_client is None or self._sync_client.connection_pool is not self.pool:  # new pool: a fork
            self._sync_client = super()._create_client()
        return self._sync_client

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        hset = message["properties"].get(WITH_HSET)
        if hset is None:
            return super()._put(queue, message, **kwargs)
        # A copy without it: kombu retries a failed publish with the same properties dict.
        message = message | {"properties": {k: v for k, v in message["properties"].items() if k != WITH_HSET}}
        if (batch := kwargs.get("_publish_batch")) is not None:  # kombu's Producer.batch(): into its pipeline
            batch.add("hset", *hset)
            return super()._put(queue, message, **kwargs)
        if self._expires and queue in self._expires:  # kombu's own multi-command path: the HSET goes first
            with self.conn_or_acquire() as client:
                client.hset(*hset)
            return super()._put(queue, message, **kwargs)
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:  # one round trip, in this order (no MULTI needed: a receipt
            # written without its message is only re-sent by the reconciler; the reverse cannot happen)
            client.pipeline(transaction=False).hset(*hset).lpush(key, dumps(message)).execute()
        return None

    def _brpop_read(self, **options: Any) -> Any:
        self.connection.delivered_to = None
        delivered = super()._brpop_read(**options)
        if self.connection.delivered_to is not None:
            self._take_more(self.connection.delivered_to)
        return delivered

    def _take_more(self, queue: str) -> None:
        room = self.qos.can_consume_max_estimate()
        room = MAX_TAKE if room is None else min(room, MAX_TAKE)
        if room <= 0 or queue not in self.connection._callbacks:
            return
        if self._take is None or self._take.registered_client.connection_pool is not self.pool:
            self._take = redis.Redis(connection_pool=self.pool).register_script(_TAKE)
        prefix = self.global_keyprefix
        keys = [prefix + self._q_for_pri(queue, pri) for pri in self.priority_steps]
        try:
            raws = self._take(keys=[*keys, prefix + self.unacked_key, prefix + self.unacked_index_key],
                              args=[time.time(), room])
        except redis.ResponseError as exc:  # the server refused the script (out of memory, ...): BRPOP goes on
            log.warning("taking more messages from %s failed: %s", queue, exc)
            return
        payloads = [loads(bytes_to_str(raw)) for raw in raws]
        for i, payload in enumerate(payloads):
            self.qos._recorded.add(payload["properties"]["delivery_tag"])
            try:
                self.connection._deliver(payload, queue)
            except BaseException:
                # The rest are recorded as unacked but reached nobody: back to their queue now, not
                # after the visibility timeout.
                for rest in payloads[i + 1:]:
                    tag = rest["properties"]["delivery_tag"]
                    self.qos._recorded.discard(tag)
                    self.qos.restore_by_tag(tag, leftmost=True)
                raise


class Transport(kombu_redis.Transport):
    Channel = Channel
    delivered_to: str | None = None  # the queue of the last message delivered (what BRPOP returned)

    def _deliver(self, message: Any, queue: str) -> None:
        self.delivered_to = queue
        super()._deliver(message, queue)
