// Streams (x-queue-type: stream) through Node's amqplib, as its own
// examples/stream_queues use them: declare, publish with confirms, two
// consumers from `first` and from a numeric offset, each delivery with its
// x-stream-offset header; a consume without prefetch is refused. Run by
// ../test_node_amqplib.py (node --test runs every *.test.js here).
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const amqp = require('amqplib');
const { url, unique } = require('./broker');

// Consumes n messages from offset; resolves with [offset header, body] pairs.
async function readFrom(conn, q, offset, n) {
  const ch = await conn.createChannel();
  await ch.prefetch(10);
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${n}`)), 15000);
    ch.consume(q, (msg) => {
      got.push([Number(msg.properties.headers['x-stream-offset']), msg.content.toString()]);
      ch.ack(msg);
      if (got.length === n) {
        clearTimeout(timer);
        resolve();
      }
    }, { noAck: false, arguments: { 'x-stream-offset': offset } }).catch(reject);
  });
  await ch.close();
  return got;
}

test('a stream read by two consumers at their own offsets', async () => {
  const conn = await amqp.connect(url, { timeout: 5000 });
  try {
    const ch = await conn.createConfirmChannel();
    const q = unique('stream');
    await ch.assertQueue(q, { durable: true, exclusive: false, autoDelete: false,
                              arguments: { 'x-queue-type': 'stream', 'x-max-length-bytes': 2000000000 } });
    for (let i = 0; i < 50; i++) ch.sendToQueue(q, Buffer.from(`m${i}`));
    await ch.waitForConfirms();
    assert.equal((await ch.checkQueue(q)).messageCount, 50);
    const [all, tail] = await Promise.all([readFrom(conn, q, 'first', 50), readFrom(conn, q, 40, 10)]);
    assert.deepEqual(all, Array.from({ length: 50 }, (_, i) => [i, `m${i}`]));
    assert.deepEqual(tail, Array.from({ length: 10 }, (_, i) => [40 + i, `m${40 + i}`]));
    // Reading removed nothing.
    assert.equal((await ch.checkQueue(q)).messageCount, 50);
    await ch.deleteQueue(q);
  } finally {
    await conn.close();
  }
});

test('consuming a stream without a prefetch is refused with 406', async () => {
  const conn = await amqp.connect(url, { timeout: 5000 });
  conn.on('error', () => {});
  try {
    const ch = await conn.createChannel();
    ch.on('error', () => {});
    const q = unique('stream');
    await ch.assertQueue(q, { durable: true, arguments: { 'x-queue-type': 'stream' } });
    await assert.rejects(ch.consume(q, () => {}, { noAck: false }), /406/);
    const ch2 = await conn.createChannel();
    await ch2.deleteQueue(q);
  } finally {
    await conn.close();
  }
});
