// Node's amqplib against the broker on 127.0.0.1:$SLUICE_AMQP_PORT.
// Run by ../test_node_amqplib.py, which starts the broker; by hand:
//   SLUICE_AMQP_PORT=5672 node --test --test-timeout=20000
'use strict';

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const amqp = require('amqplib');
const { url, unique } = require('./broker');

const opened = [];
async function connect() {
  // noDelay as any latency-minded client sets it: with Nagle on, every RPC
  // round trip waits ~40 ms for the peer's delayed ACK
  const conn = await amqp.connect(url, { timeout: 5000, noDelay: true });
  opened.push(conn);
  return conn;
}
after(async () => {
  for (const c of opened) {
    try { await c.close(); } catch (_) { /* already closed */ }
  }
});

// resolves with the value of `fn()` once it is truthy; rejects after `ms`
function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test('server properties advertise what amqplib relies on', async () => {
  const conn = await connect();
  const caps = conn.connection.serverProperties.capabilities;
  for (const cap of ['publisher_confirms', 'basic.nack', 'consumer_cancel_notify',
                     'exchange_exchange_bindings', 'direct_reply_to']) {
    assert.equal(caps[cap], true, `capability ${cap}`);
  }
  await conn.close();
});

test('confirm channel: publish many, all confirmed, consume them in order', async () => {
  const conn = await connect();
  const ch = await conn.createConfirmChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  assert.match(queue, /^amq\.gen-/);
  const n = 500;
  const acks = [];
  for (let i = 0; i < n; i++) {
    acks.push(new Promise((resolve, reject) => {
      ch.sendToQueue(queue, Buffer.from(`msg ${i}`),
        { persistent: i % 2 === 0, headers: { i }, contentType: 'text/plain' },
        (err) => (err ? reject(err) : resolve(i)));
    }));
  }
  await within(10000, 'all publisher confirms', Promise.all(acks));
  await within(5000, 'waitForConfirms', ch.waitForConfirms());
  const ok = await ch.checkQueue(queue);
  assert.equal(ok.messageCount, n);

  const got = [];
  await within(10000, `${n} deliveries`, new Promise((resolve, reject) => {
    ch.prefetch(50);
    ch.consume(queue, (msg) => {
      try {
        assert.equal(msg.properties.headers.i, got.length);
        assert.equal(msg.properties.contentType, 'text/plain');
        assert.equal(msg.properties.deliveryMode, got.length % 2 === 0 ? 2 : 1);
        assert.equal(msg.fields.redelivered, false);
        got.push(msg.content.toString());
        ch.ack(msg);
        if (got.length === n) resolve();
      } catch (e) { reject(e); }
    }, { noAck: false }).catch(reject);
  }));
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => `msg ${i}`));
  await conn.close();
});

test('confirm channel: mandatory unroutable message is returned with 312', async () => {
  const conn = await connect();
  const ch = await conn.createConfirmChannel();
  const returned = new Promise((resolve) => ch.on('return', resolve));
  const confirmed = new Promise((resolve, reject) => {
    ch.publish('amq.direct', unique('nowhere'), Buffer.from('lost'), { mandatory: true },
      (err) => (err ? reject(err) : resolve()));
  });
  const msg = await within(5000, 'basic.return', returned);
  assert.equal(msg.fields.replyCode, 312);
  assert.equal(msg.fields.replyText, 'NO_ROUTE');
  assert.equal(msg.content.toString(), 'lost');
  await within(5000, 'confirm of the returned message', confirmed);
  await conn.close();
});

test('checkQueue of a missing queue fails with 404 and closes the channel only', async () => {
  const conn = await connect();
  const ch = await conn.createChannel();
  ch.on('error', () => {});   // the channel error is expected
  await assert.rejects(ch.checkQueue(unique('missing')), (err) => err.code === 404);
  const ch2 = await conn.createChannel();
  const { queue } = await ch2.assertQueue(unique('node.after404'), { exclusive: true });
  assert.ok(queue);
  await conn.close();
});

test('direct reply-to RPC', async () => {
  const serverConn = await connect();
  const sch = await serverConn.createChannel();
  const rpcQueue = unique('node.rpc');
  await sch.assertQueue(rpcQueue, { exclusive: true });
  await sch.prefetch(1);
  const seenReplyTo = new Set();
  await sch.consume(rpcQueue, (msg) => {
    seenReplyTo.add(msg.properties.replyTo);
    const n = parseInt(msg.content.toString(), 10);
    sch.sendToQueue(msg.properties.replyTo, Buffer.from(String(n * n)),
      { correlationId: msg.properties.correlationId });
    sch.ack(msg);
  });

  const clientConn = await connect();
  const cch = await clientConn.createChannel();
  const pending = new Map();
  await cch.consume('amq.rabbitmq.reply-to', (msg) => {
    const resolve = pending.get(msg.properties.correlationId);
    if (resolve) {
      pending.delete(msg.properties.correlationId);
      resolve(msg.content.toString());
    }
  }, { noAck: true });

  const call = (n) => new Promise((resolve) => {
    const correlationId = crypto.randomUUID();
    pending.set(correlationId, resolve);
    cch.sendToQueue(rpcQueue, Buffer.from(String(n)),
      { replyTo: 'amq.rabbitmq.reply-to', correlationId });
  });

  // sequential calls, then 100 concurrent ones
  for (let i = 0; i < 20; i++) {
    assert.equal(await within(5000, `reply to call ${i}`, call(i)), String(i * i));
  }
  const replies = await within(10000, '100 concurrent replies',
    Promise.all(Array.from({ length: 100 }, (_, i) => call(i))));
  assert.deepEqual(replies, Array.from({ length: 100 }, (_, i) => String(i * i)));
  assert.equal(pending.size, 0);
  assert.equal(seenReplyTo.size, 1);
  const [replyTo] = seenReplyTo;
  assert.ok(replyTo.startsWith('amq.rabbitmq.reply-to.'), replyTo);
  await clientConn.close();
  await serverConn.close();
});
