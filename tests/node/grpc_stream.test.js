// InferStream from Node with @grpc/grpc-js, using only proto/: the start,
// the deltas and the end of a streamed answer, and a client cancelling it.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { startArbiter, metric, eventually } = require('./serve');

const protoRoot = path.resolve(__dirname, '../../proto');
let arbiter;
let gateway;
const request = {
  messages: [{ role: 'ROLE_USER', content: 'How do I reset my password?' }],
  route: 'prompted',
};

before(async () => {
  arbiter = await startArbiter({ secondsPerToken: 0.02 });
  const v1 = grpc.loadPackageDefinition(protoLoader.loadSync(
    path.join(protoRoot, 'arbiter/v1/gateway.proto'),
    { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
      includeDirs: [protoRoot] })).arbiter.v1;
  gateway = new v1.Gateway(`127.0.0.1:${arbiter.grpc}`, grpc.credentials.createInsecure());
});

after(() => {
  gateway?.close();
  arbiter?.server.kill('SIGTERM');
});

test('InferStream sends the start, the deltas, then the end', async () => {
  const chunks = await new Promise((resolve, reject) => {
    const received = [];
    const call = gateway.InferStream(request, { deadline: Date.now() + 30000 });
    call.on('data', (chunk) => received.push(chunk));
    call.on('error', reject);
    call.on('end', () => resolve(received));
  });
  assert.equal(chunks[0].chunk, 'start');
  assert.equal(chunks[0].start.route, 'prompted');
  assert.match(chunks[0].start.request_id, /^arb2_/);
  const end = chunks[chunks.length - 1];
  assert.equal(end.chunk, 'end');
  assert.ok(end.end.cost_usd > 0);
  assert.ok(end.end.usage.output_tokens > 0);
  const deltas = chunks.slice(1, -1);
  assert.ok(deltas.length > 3, `${deltas.length} deltas`);
  assert.ok(deltas.every((c) => c.chunk === 'delta'));
  assert.match(deltas.map((c) => c.delta.text).join(''), /^\[sim\]/);
});

test('a client cancelling InferStream cancels the backend call', async () => {
  const labels = ['route="prompted"', 'outcome="cancelled"'];
  const before = await metric(arbiter.metrics, 'arbiter_requests_total', labels);
  const code = await new Promise((resolve) => {
    const call = gateway.InferStream(request, { deadline: Date.now() + 30000 });
    let deltas = 0;
    call.on('data', (chunk) => {
      if (chunk.chunk === 'delta' && ++deltas === 2) call.cancel();
    });
    call.on('error', (error) => resolve(error.code));
    call.on('end', () => resolve('ended'));
  });
  assert.equal(code, grpc.status.CANCELLED);
  assert.ok(await eventually(async () =>
    (await metric(arbiter.metrics, 'arbiter_requests_total', labels)) > before),
  'no request counted with outcome="cancelled"');
  assert.ok(await metric(arbiter.metrics, 'arbiter_cancelled_cost_usd_total', labels) > 0);
});
