// The x-consistent-hash exchange through Node's amqplib: weights 1:2:3 and
// 30k distinct routing keys spread within 5% of the weights; a message
// without its hash header is returned when mandatory. Run by
// ../test_node_amqplib.py (node --test runs every *.test.js here).
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const amqp = require('amqplib');
const { url, unique } = require('./broker');

async function depths(ch, queues) {
  const out = [];
  for (const q of queues) out.push((await ch.checkQueue(q)).messageCount);
  return out;
}

async function waitTotal(ch, queues, total, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const d = await depths(ch, queues);
    if (d.reduce((a, b) => a + b, 0) >= total) return d;
    if (Date.now() > deadline) throw new Error(`only ${d} of ${total} routed`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('consistent-hash spread follows the binding weights', async () => {
  const conn = await amqp.connect(url, { timeout: 5000 });
  try {
    const ch = await conn.createConfirmChannel();
    const x = unique('chx');
    await ch.assertExchange(x, 'x-consistent-hash', { durable: false });
    const weights = [1, 2, 3];
    const queues = [];
    for (const w of weights) {
      const q = (await ch.assertQueue('', { exclusive: true })).queue;
      await ch.bindQueue(q, x, String(w));
      queues.push(q);
    }
    const n = 30000;
    for (let i = 0; i < n; i++) {
      if (!ch.publish(x, `key-${i}`, Buffer.alloc(0))) await new Promise((r) => ch.once('drain', r));
    }
    await ch.waitForConfirms();
    const counts = await waitTotal(ch, queues, n);
    assert.equal(counts.reduce((a, b) => a + b, 0), n);
    weights.forEach((w, i) => {
      const expected = (n * w) / 6;
      assert.ok(Math.abs(counts[i] / expected - 1) < 0.05, `weight ${w}: ${counts[i]} vs ${expected} (${counts})`);
    });
  } finally {
    await conn.close();
  }
});

test('consistent-hash on a header returns a message without it', async () => {
  const conn = await amqp.connect(url, { timeout: 5000 });
  try {
    const ch = await conn.createConfirmChannel();
    const x = unique('chx');
    await ch.assertExchange(x, 'x-consistent-hash', { durable: false, arguments: { 'hash-header': 'hash-on' } });
    const q = (await ch.assertQueue('', { exclusive: true })).queue;
    await ch.bindQueue(q, x, '1');
    const returned = new Promise((resolve) => ch.once('return', resolve));
    ch.publish(x, 'rk', Buffer.from('no header'), { mandatory: true, headers: { other: 'x' } });
    ch.publish(x, 'rk', Buffer.from('with header'), { mandatory: true, headers: { 'hash-on': 'a' } });
    await ch.waitForConfirms();
    const r = await returned;
    assert.equal(r.fields.replyCode, 312);
    assert.equal(r.content.toString(), 'no header');
    assert.equal((await ch.checkQueue(q)).messageCount, 1);
  } finally {
    await conn.close();
  }
});
