// Message deduplication through Node's amqplib: a queue declared with
// x-message-deduplication (as amqplib users of LavinMQ and the plugin do)
// takes one copy per key; an exchange of the plugin's type routes as fanout
// and drops a duplicate, which a mandatory publish gets back as a return;
// confirms ack every publish. Run by ../test_node_amqplib.py.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const amqp = require('amqplib');
const { url, unique } = require('./broker');

test('a deduplicating queue takes one copy per key', async () => {
  const conn = await amqp.connect(url, { timeout: 5000 });
  try {
    const ch = await conn.createConfirmChannel();
    const q = unique('dedupq');
    await ch.assertQueue(q, { exclusive: true, arguments: { 'x-message-deduplication': true, 'x-cache-size': 100 } });
    const keys = ['a', 'b', 'a', 'c', 'b', 'a'];
    keys.forEach((k, i) => ch.sendToQueue(q, Buffer.from(String(i)), { headers: { 'x-deduplication-header': k } }));
    ch.sendToQueue(q, Buffer.from('no-key'));
    await ch.waitForConfirms();  // every publish acked, duplicates too
    assert.equal((await ch.checkQueue(q)).messageCount, 4);
    const got = [];
    for (;;) {
      const m = await ch.get(q, { noAck: true });
      if (!m) break;
      got.push(m.content.toString());
    }
    assert.deepEqual(got, ['0', '1', '3', 'no-key']);
  } finally {
    await conn.close();
  }
});

test('the plugin exchange type drops a duplicate and returns it when mandatory', async () => {
  const conn = await amqp.connect(url, { timeout: 5000 });
  try {
    const ch = await conn.createConfirmChannel();
    const x = unique('dedupx');
    await ch.assertExchange(x, 'x-message-deduplication', { durable: false, arguments: { 'x-cache-size': 10 } });
    const q = (await ch.assertQueue('', { exclusive: true })).queue;
    await ch.bindQueue(q, x, 'ignored');
    const returned = [];
    ch.on('return', (m) => returned.push(m.content.toString()));
    ch.publish(x, 'any', Buffer.from('first'), { headers: { 'x-deduplication-header': 'k' }, mandatory: true });
    ch.publish(x, 'any', Buffer.from('dup'), { headers: { 'x-deduplication-header': 'k' }, mandatory: true });
    await ch.waitForConfirms();  // a return comes before its ack
    assert.deepEqual(returned, ['dup']);
    assert.equal((await ch.checkQueue(q)).messageCount, 1);
  } finally {
    await conn.close();
  }
});
