// What every test file here shares: the broker ../test_node_amqplib.py
// started (SLUICE_AMQP_PORT, SLUICE_AMQP_HOST) as an amqplib URL, and names
// no other test uses. Not a test file (node --test runs *.test.js only).
'use strict';

const crypto = require('node:crypto');

const port = process.env.SLUICE_AMQP_PORT;
if (!port) throw new Error('SLUICE_AMQP_PORT is not set');
const host = process.env.SLUICE_AMQP_HOST || '127.0.0.1';
const url = `amqp://guest:guest@${host}:${port}/%2F`;

const unique = (prefix) => `${prefix}.${crypto.randomBytes(6).toString('hex')}`;

module.exports = { host, port, url, unique };
