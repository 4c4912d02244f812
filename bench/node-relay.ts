/**
 * One end of the Node relay the throughput benchmark measures beside Tether
 * (bench/protocol.ts): the same shape as the socat relay, command → this
 * process → TCP → this process → nothing, written in Node, optionally with
 * HMAC-SHA256 over every chunk at both ends, as Tether tags every frame.
 * It is the least a Node process can cost on this path, with or without
 * authentication: no framing, no CRC, no flow control of its own.
 *
 *   node node-relay.js send PORT hmac|plain     stdin → 127.0.0.1:PORT
 *   node node-relay.js receive PORT hmac|plain  listens once, says "ready" on stdout, and at
 *                                               the end the ms from the first byte to the last
 *
 * Timed from the first byte, so Node's start-up is out: a bound on the
 * rate, in Node's favour.
 */
import { createHmac } from 'node:crypto';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';

const [mode, portText, auth] = process.argv.slice(2);
const port = Number(portText);
const key = Buffer.alloc(32, 7);
const tag = auth === 'hmac' ? (chunk: Buffer) => void createHmac('sha256', key).update(chunk).digest() : () => undefined;

if (mode === 'send') {
  const socket = net.connect(port, '127.0.0.1', () => {
    process.stdin.on('data', (chunk: Buffer) => {
      tag(chunk);
      if (!socket.write(chunk)) {
        process.stdin.pause();
        socket.once('drain', () => process.stdin.resume());
      }
    });
    process.stdin.on('end', () => socket.end());
  });
} else if (mode === 'receive') {
  const server = net.createServer((socket) => {
    server.close();
    let first = 0;
    socket.on('data', (chunk: Buffer) => {
      first ||= performance.now();
      tag(chunk);
    });
    socket.on('end', () => process.stdout.write(`${performance.now() - first}\n`));
  });
  server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));
} else {
  process.stderr.write('usage: node-relay.js send|receive PORT hmac|plain\n');
  process.exit(2);
}
