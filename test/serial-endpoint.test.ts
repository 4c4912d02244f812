/** Serial URLs: parsing, descriptions, and the clear errors users get for mistakes. */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { TetherHub } from '../master-plugin/hub';
import { serialBytesPerSecond } from '../wire/serial-line';
import { UsageError, asOpenedTransport, describeEndpoint, listen, parseEndpoint } from '../wire/transport';
import { socatPair } from './helpers/line-sim';
import { MASTER_BIN } from './helpers/tether-procs';

t.test('serial URLs parse for the agent and the master', async (t) => {
  t.same(parseEndpoint('serial:/dev/ttyS0?baud=115200'), { kind: 'serial', path: '/dev/ttyS0', baud: 115200 });
  t.same(parseEndpoint('serial:/dev/ttyS0'), { kind: 'serial', path: '/dev/ttyS0', baud: 115200 }, 'baud defaults to 115200');
  t.same(parseEndpoint('serial:///dev/ttyACM1?baud=9600'), { kind: 'serial', path: '/dev/ttyACM1', baud: 9600 }, 'serial:/// form');
  t.same(parseEndpoint('serial:relative/A1?baud=57600'), { kind: 'serial', path: 'relative/A1', baud: 57600 });
  t.same(parseEndpoint('serial:/dev/ttyUSB0?baud=115200&worker=board-01', 'listen'), {
    kind: 'serial', path: '/dev/ttyUSB0', baud: 115200, worker: 'board-01',
  });
  t.same(parseEndpoint('serial:/dev/ttyUSB0?worker=b&baud=921600&rtscts=1', 'listen'), {
    kind: 'serial', path: '/dev/ttyUSB0', baud: 921600, worker: 'b', rtscts: true,
  });
  t.same(parseEndpoint('tcp://127.0.0.1:9991'), { kind: 'tcp', host: '127.0.0.1', port: 9991 }, 'tcp unchanged');
  t.same(parseEndpoint('tls://[::1]:9991', 'listen'), { kind: 'tls', host: '::1', port: 9991 }, 'tls unchanged');
});

t.test('mistakes in serial URLs are usage errors that say what is wrong', async (t) => {
  const cases: Array<[string, 'connect' | 'listen', RegExp]> = [
    ['serial:', 'connect', /names no device/],
    ['serial:?baud=9600', 'connect', /names no device/],
    ['serial:/dev/ttyS0?baud=fast', 'connect', /baud=fast .* is not a baud rate/],
    ['serial:/dev/ttyS0?baud=115201', 'connect', /baud=115201 .* is not a baud rate \(use one of .*115200/],
    ['serial:/dev/ttyS0?baud=-9600', 'connect', /not a baud rate/],
    ['serial:/dev/ttyS0?baud=115200', 'listen', /must name the worker that uses the line: add &worker=NAME/],
    ['serial:/dev/ttyS0?baud=115200&worker=', 'listen', /worker= .* is empty/],
    ['serial:/dev/ttyS0?baud=115200&worker=w', 'connect', /worker= .* belongs on the master's --listen/],
    ['serial:/dev/ttyS0?parity=even', 'connect', /'parity' .* is not a serial line setting/],
    ['serial:/dev/ttyS0?rtscts=maybe', 'connect', /rtscts=maybe .* must be 1 or 0/],
    ['http://h', 'connect', /not an address like tcp:\/\/HOST:PORT or tls:\/\/HOST:PORT or serial:DEVICE\?baud=N/],
  ];
  for (const [url, use, pattern] of cases) {
    t.throws(() => parseEndpoint(url, use), { name: 'UsageError', message: pattern }, `${use} ${url}`);
  }
});

t.test('descriptions round-trip', async (t) => {
  for (const [url, use] of [
    ['serial:/dev/ttyS0?baud=115200', 'connect'],
    ['serial:/dev/ttyUSB0?baud=9600&worker=board-01', 'listen'],
    ['serial:/dev/ttyUSB0?baud=9600&worker=a%20b&rtscts=1', 'listen'],
  ] as const) {
    const e = parseEndpoint(url, use);
    t.equal(describeEndpoint(e), url);
    t.same(parseEndpoint(describeEndpoint(e), use), e);
  }
});

t.test('line rate and reliability hints', async (t) => {
  t.equal(serialBytesPerSecond(115200), 11520, '115200 baud 8N1 is 11 520 bytes/s');
  t.equal(serialBytesPerSecond(9600), 960);
  const s = new PassThrough();
  t.same(asOpenedTransport(s), { transport: s, lossy: false }, 'a bare stream is reliable, of unknown rate');
  const opened = { transport: s, lossy: true, bytesPerSecond: 11520 };
  t.equal(asOpenedTransport(opened), opened);
});

t.test('serial lines are not TCP listeners', async (t) => {
  t.throws(() => listen(parseEndpoint('serial:/dev/null?worker=w', 'listen'), {}, () => undefined), UsageError);
});

t.test('a missing device is one clear error from the hub and from tether-master', async (t) => {
  const hub = new TetherHub({ workers: { w: 's' } });
  t.teardown(() => hub.close());
  await t.rejects(hub.listen('serial:/dev/ttyUSB9?baud=115200&worker=w'), {
    name: 'UsageError', message: /^serial device \/dev\/ttyUSB9 does not exist/,
  });
  await t.rejects(hub.listen('serial:/dev/null?baud=115200&worker=w'), { message: /cannot open serial device \/dev\/null|is not a serial device/ });
  await t.rejects(hub.listen('serial:/dev/ttyUSB9?baud=115200'), { message: /add &worker=NAME/ });

  const r = spawnSync(process.execPath, [MASTER_BIN, '--listen', 'serial:/dev/ttyUSB9?baud=115200&worker=w', '--worker', 'w:s'], {
    encoding: 'utf8', timeout: 20_000,
  });
  t.equal(r.status, 2, 'exit 2');
  t.match(r.stderr, /^tether-master: serial device \/dev\/ttyUSB9 does not exist/);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
});

t.test('the agent side opens a serial line without loading serialport or its native binding', async (t) => {
  const pair = await socatPair();
  t.teardown(() => pair.close());
  const script = `
    require('./build/agent/cli.js');
    const { openEndpoint, parseEndpoint } = require('./build/wire/transport.js');
    openEndpoint(parseEndpoint(${JSON.stringify(`serial:${pair.a}?baud=115200`)})).then((o) => {
      o.transport.write('x');
      const loaded = Object.keys(require.cache).filter((k) => /serialport/.test(k));
      console.log(JSON.stringify({ lossy: o.lossy, bytesPerSecond: o.bytesPerSecond, loaded }));
      o.transport.destroy();
    });
  `;
  const r = spawnSync(process.execPath, ['-e', script], { cwd: require('node:path').resolve(__dirname, '..'), encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout), { lossy: true, bytesPerSecond: 11520, loaded: [] }, 'no serialport module was loaded');
});
