// The x-delayed-message exchange through Node's amqplib: messages published
// with x-delay 600, 200, 400 ms (topic routing) come in due-time order, none
// before its due time, each carrying x-delay = -delay; one without x-delay
// comes at once. Run by ../test_node_amqplib.py (node --test runs every
// *.test.js here).
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const amqp = require('amqplib');
const { url, unique } = require('./broker');

test('delayed messages come in due-time order', async () => {
  const conn = await amqp.connect(url, { timeout: 5000 });
  try {
    const ch = await conn.createConfirmChannel();
    const x = unique('dx');
    await ch.assertExchange(x, 'x-delayed-message', { durable: true, arguments: { 'x-delayed-type': 'topic' } });
    const q = (await ch.assertQueue('', { exclusive: true })).queue;
    await ch.bindQueue(q, x, 'jobs.#');
    const sent = new Map();
    for (const [name, delay] of [['a', 600], ['b', 200], ['c', 400], ['now', undefined]]) {
      const headers = delay === undefined ? {} : { 'x-delay': delay };
      sent.set(name, { at: Date.now(), delay: delay || 0 });
      ch.publish(x, 'jobs.send', Buffer.from(name), { persistent: true, headers });
    }
    await ch.waitForConfirms();
    const got = [];
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${got.map((g) => g.name)} came`)), 10000);
      ch.consume(q, (m) => {
        got.push({ name: m.content.toString(), at: Date.now(), xdelay: m.properties.headers['x-delay'] });
        if (got.length === 4) {
          clearTimeout(timer);
          resolve();
        }
      }, { noAck: true });
    });
    assert.deepEqual(got.map((g) => g.name), ['now', 'b', 'c', 'a']);
    for (const g of got) {
      const s = sent.get(g.name);
      // Date.now() has whole ms, as the broker's clock: due no earlier than publish + delay.
      assert.ok(g.at >= s.at + s.delay - 1, `${g.name} came ${s.at + s.delay - g.at} ms early`);
      assert.ok(g.at - (s.at + s.delay) < 2000, `${g.name} came ${g.at - s.at - s.delay} ms late`);
      if (s.delay > 0) assert.equal(g.xdelay, -s.delay);
    }
    await ch.deleteExchange(x);
  } finally {
    await conn.close();
  }
});
